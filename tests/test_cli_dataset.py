"""The dataset's two defaults and the sample's one name: `Settings` defaults to the sample shipped with minisweep,
named '', the command line to the study's dataset; the word `sample` is refused in one line (FAULTS.md)."""
import shutil
from dataclasses import asdict

import pytest

from conftest import minisweep
from minisweep.core import DEFAULT_DATASET, SAMPLE, Settings

REFUSED = "dataset is '' (--dataset '') for the sample shipped with minisweep, ./sample for a folder named sample"
COMMANDS = {   # each command that takes --dataset, with what else it needs to get that far
    'train': ['train', '--model', 'resnet18', '--subset-sizes', '0.5', '--image-size', '64'],
    'sweep': ['sweep', '--models', 'resnet18', '--subset-sizes', '0.5', '--image-size', '64', '--out', 'runs/s'],
    'prepare': ['prepare', '--image-size', '64'],
}


@pytest.mark.parametrize('command', COMMANDS)
def test_the_word_sample_is_one_line_naming_the_samples_name(command, tmp_path):
    p = minisweep(*COMMANDS[command], '--dataset', 'sample', cwd=tmp_path)
    lines = [l for l in p.stderr.splitlines() if l.strip()]
    assert p.returncode == 2 and len(lines) == 1 and REFUSED in lines[0], p.stderr[-2000:]
    assert "got 'sample'" in lines[0] and not list(tmp_path.iterdir())        # refused before anything is made


@pytest.mark.parametrize('command', COMMANDS)
def test_help_names_both_the_default_and_the_sample(command):
    p = minisweep(command, '--help')
    text = ' '.join(p.stdout.split())                  # argparse wraps the help: compare the words
    assert p.returncode == 0
    assert f'(default {DEFAULT_DATASET}, the study\'s dataset)' in text
    assert "'' (empty): the 10-class sample shipped with minisweep" in text


def test_settings_default_is_the_sample_and_the_api_refuses_the_word_too():
    from minisweep.core import UserError
    assert Settings().dataset == SAMPLE == ''
    with pytest.raises(UserError, match="dataset is '' "):
        Settings(dataset='sample').check()
    with pytest.raises(UserError, match="a saved config: dataset is ''"):
        Settings.from_dict(asdict(Settings()) | dict(dataset='sample'))


def test_a_folder_named_sample_is_reached_by_its_path(tmp_path):
    "The sample copied to a folder called `sample`: `./sample` plans a sweep on it, as any folder would."
    from minisweep.data import sample_dataset
    shutil.copytree(sample_dataset(), tmp_path / 'sample')
    p = minisweep('sweep', '--models', 'resnet18', '--subset-sizes', '0.5', '--image-size', '64', '--dataset',
                  './sample', '--out', tmp_path / 'planned', '--dry-run', cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
    assert f'dataset: {tmp_path / "sample"} (400 training images, 10 classes)' in p.stdout, p.stdout[-2000:]
    assert not (tmp_path / 'planned').exists()

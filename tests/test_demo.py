"`minisweep demo` ends as `minisweep clean` does, unless --keep-checkpoints: results stay, checkpoints go."
import pytest

from minisweep import cli

TINY = dict(models=['resnet18'], subset_sizes=[0.5], seeds=[0],     # one real run of the demo's settings, 1 epoch
            train=dict(cli.DEMO['train'], num_epochs=1))


@pytest.mark.parametrize('keep', [False, pytest.param(True, marks=pytest.mark.slow)])
def test_demo_frees_checkpoints_unless_kept(tmp_path, monkeypatch, venv_path_env, capsys, keep):
    monkeypatch.setattr(cli, 'DEMO', TINY)
    monkeypatch.setenv('PATH', venv_path_env['PATH'])
    out = tmp_path / 'demo'
    assert cli.main(['demo', '--out', str(out), '--figures', ''] + (['--keep-checkpoints'] if keep else [])) == 0
    run = out / 'resnet18' / 'subset_0.5000' / 'seed_0'
    said = capsys.readouterr().out
    assert (run / 'metrics.json').is_file() and (run / 'train.ipynb').is_file() and (out / 'results.json').is_file()
    assert (run / 'best.pt').exists() == keep and not (run / 'last.pt').exists()
    assert ('freed' in said) != keep and 'efficiency:' in said

from configparser import ConfigParser
from pathlib import Path
import shutil
import setuptools
from setuptools.command.build_py import build_py
from packaging.version import Version

assert Version(setuptools.__version__) >= Version('61'), 'please upgrade setuptools'

config = ConfigParser(delimiters=['='])
config.read('settings.ini', encoding='utf-8')
cfg = config['DEFAULT']

cfg_keys = 'version description keywords author author_email'.split()
expected = cfg_keys + "lib_name user branch license status min_python audience language".split()
for o in expected: assert o in cfg, "missing expected setting: {}".format(o)
setup_cfg = {o: cfg[o] for o in cfg_keys}

# (name, classifier, SPDX expression): the SPDX expression is the license; current setuptools warns on license classifiers
licenses = {
    'apache2': ('Apache Software License 2.0', 'OSI Approved :: Apache Software License', 'Apache-2.0'),
    'mit': ('MIT License', 'OSI Approved :: MIT License', 'MIT'),
}
statuses = ['1 - Planning', '2 - Pre-Alpha', '3 - Alpha', '4 - Beta', '5 - Production/Stable', '6 - Mature', '7 - Inactive']
py_versions = '3.10 3.11 3.12 3.13'.split()

requirements = cfg.get('requirements', '').split()
dev_requirements = (cfg.get('dev_requirements') or '').split()
lic = licenses.get(cfg['license'].lower(), (cfg['license'], None, cfg['license']))
min_python = cfg['min_python']

# The papermill jobs travel inside the package, so `pip install minisweep` + `minisweep sweep` works anywhere.
SHIPPED_NOTEBOOKS = ['02_train.ipynb', '04_curves.ipynb']

class BuildWithNotebooks(build_py):
    "Copy the notebooks that the sweep executes into the built package."
    def run(self):
        super().run()
        dest = Path(self.build_lib) / cfg['lib_path'] / 'notebooks'
        dest.mkdir(parents=True, exist_ok=True)
        for name in SHIPPED_NOTEBOOKS: shutil.copy2(Path(cfg['nbs_path']) / name, dest / name)

setuptools.setup(
    name=cfg['lib_name'],
    license=lic[2],
    classifiers=['Development Status :: ' + statuses[int(cfg['status'])],
                 'Intended Audience :: ' + cfg['audience'].title(),
                 'Natural Language :: ' + cfg['language'].title()]
                + ['Programming Language :: Python :: ' + o for o in py_versions[py_versions.index(min_python):]],
    url=cfg['git_url'],
    # the shipped sample's folders hold data, not code: declared as (namespace) packages so that their files are package data
    packages=setuptools.find_namespace_packages(include=[cfg['lib_path'], cfg['lib_path'] + '.*']),
    package_data={cfg['lib_path']: ['notebooks/*.ipynb'], cfg['lib_path'] + '.sample': ['*.md'],
                  cfg['lib_path'] + '.sample.data': ['*.parquet']},
    include_package_data=True,
    cmdclass={'build_py': BuildWithNotebooks},
    install_requires=requirements,
    extras_require={'dev': dev_requirements, 'ray': ['ray[default]>=2.9'], 'tensorboard': ['tensorboard>=2.14']},
    dependency_links=cfg.get('dep_links', '').split(),
    python_requires='>=' + cfg['min_python'],
    long_description=open('README.md', encoding='utf-8').read(),
    long_description_content_type='text/markdown',
    zip_safe=False,
    entry_points={
        'console_scripts': cfg.get('console_scripts', '').split(),
        'nbdev': [f'{cfg.get("lib_path")}={cfg.get("lib_path")}._modidx:d'],
    },
    **setup_cfg)

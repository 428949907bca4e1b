"""The documentation site: it builds with warnings as errors, and the API reference lists every
public name of ``kernelkip`` and ``kernelkip.data``."""
import importlib.util
import inspect
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

import kernelkip as kk
import kernelkip.data

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
# what `pip install -e .[docs]` provides (setup.cfg), by import name
DOCS_MODULES = ("sphinx", "pydata_sphinx_theme", "numpydoc", "myst_parser")


def _listed(page):
    """Names in the ``.. autosummary::`` tables of ``docs/api/<page>``."""
    text = (DOCS / "api" / page).read_text()
    return set(re.findall(r"^   ([A-Za-z_][\w.]*)$", text, re.M))


def test_api_reference_lists_every_public_name():
    # modules (kk.krr, kk.objectives, ...) are documented through the members listed
    public = {name for name, value in vars(kk).items()
              if not name.startswith("_") and not inspect.ismodule(value)}
    missing = public - _listed("index.rst")
    assert not missing, f"add {sorted(missing)} to an autosummary table of docs/api/index.rst"


def test_data_reference_lists_every_public_name():
    # the constants DATASET_NAMES and DEFAULT_SEARCH_DIRS are described on load_dataset's page
    public = {name for name in kernelkip.data.__all__ if not name.isupper()}
    missing = public - _listed("data.rst")
    assert not missing, f"add {sorted(missing)} to an autosummary table of docs/api/data.rst"


@pytest.mark.slow
def test_docs_build_with_warnings_as_errors(tmp_path):
    """``python -m sphinx -W --keep-going -b html docs <tmp>`` succeeds (about 10 s)."""
    absent = [m for m in DOCS_MODULES if importlib.util.find_spec(m) is None]
    if absent:
        pytest.skip(f"the docs extra is not installed ({', '.join(absent)} missing): "
                    f"pip install -e .[docs], or KERNELKIP_DOCS=1 ./run-tests")
    # build a copy, so that autosummary's stubs (docs/api/generated/) and the doctrees land
    # in tmp_path and not in the checkout
    src = tmp_path / "docs"
    shutil.copytree(DOCS, src, ignore=shutil.ignore_patterns("_build", "generated"))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    cmd = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
           "-d", str(tmp_path / "doctrees"), str(src), str(tmp_path / "html")]
    start = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path,
                         timeout=600)
    seconds = time.perf_counter() - start
    assert out.returncode == 0, (f"the docs build failed after {seconds:.0f} s:\n"
                                 f"{out.stderr[-6000:]}\n{out.stdout[-2000:]}")
    html = tmp_path / "html"
    for page in ("index.html", "api/index.html", "api/data.html", "math/fc.html",
                 "api/generated/kernelkip.ntk.html", "api/generated/kernelkip.data.zca.html"):
        assert (html / page).is_file(), f"{page} was not written"

"""cddfm3d.progress: one progress bar that honours tqdm's environment overrides (TQDM_DISABLE)."""
import os
import subprocess
import sys

import pytest

from cddfm3d.progress import progress_bar

# tqdm reads TQDM_* variables when it is imported, so each case runs in a fresh interpreter.
_PROBE = ("import io, sys\n"
          "if {notebook}:\n"
          "    import tqdm.auto, tqdm.notebook\n"
          "    tqdm.auto.tqdm = tqdm.notebook.tqdm   # what tqdm.auto picks inside a Jupyter kernel\n"
          "from cddfm3d.progress import progress_bar\n"
          "print(progress_bar(range(3), enabled={enabled}, file=io.StringIO()).disable)\n")


def _disabled(enabled: bool, tqdm_disable: str | None, notebook: bool = False) -> bool:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TQDM_")}
    if tqdm_disable is not None:
        env["TQDM_DISABLE"] = tqdm_disable
    out = subprocess.run([sys.executable, "-c", _PROBE.format(enabled=enabled, notebook=notebook)], env=env, check=True,
                         capture_output=True, text=True).stdout.split()[-1]
    return {"True": True, "False": False}[out]


@pytest.mark.parametrize("notebook", [False, True])
@pytest.mark.parametrize("enabled, tqdm_disable, expected", [
    (True, None, False),      # a bar by default
    (True, "1", True),        # the environment turns an enabled bar off (an explicit disable=False would not)
    (False, None, True),      # the caller turns it off
    (False, "", True),        # and an empty variable does not turn it back on
])
def test_progress_bar_honours_tqdm_disable(enabled, tqdm_disable, expected, notebook):
    """Also with the notebook bar that tqdm.auto gives in a kernel (it turns a missing disable into False)."""
    assert _disabled(enabled, tqdm_disable, notebook) is expected


def test_progress_bar_yields_everything_and_refuses_disable():
    import io
    for enabled in (True, False):
        assert list(progress_bar(range(5), enabled=enabled, file=io.StringIO())) == [0, 1, 2, 3, 4]
    with pytest.raises(TypeError, match="enabled="):
        progress_bar(range(2), disable=False)

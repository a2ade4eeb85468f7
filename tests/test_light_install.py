"""The light install: everything but the `tf` extra's features works without TensorFlow and TFDS
(run in subprocesses where importing them fails, as on a machine without the extra), with the
results of a full install. That the base install does not pull them in: test_base_install.py."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Python code that makes `import tensorflow` and `import tensorflow_datasets` fail from here on.
NO_TF = "import sys\nsys.modules['tensorflow'] = None\nsys.modules['tensorflow_datasets'] = None\n"


def _run_without_tf(code: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", NO_TF + code],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=timeout,
    )


def test_every_module_imports_without_tensorflow():
    code = """
import importlib, pkgutil
import cqrnet_jax
names = [m.name for m in pkgutil.walk_packages(cqrnet_jax.__path__, "cqrnet_jax.")]
for name in names:
    importlib.import_module(name)
print(len(names))
"""
    done = _run_without_tf(code)
    assert done.returncode == 0, done.stderr[-2000:]
    assert int(done.stdout.split()[-1]) > 30


def test_training_input_falls_back_to_numpy_and_tf_backend_says_how_to_install():
    code = """
import numpy as np
from cqrnet_jax.config_base import train_defaults
from cqrnet_jax.data.pipeline import make_batches

cfg = train_defaults().data
images = [np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8)]
kw = dict(mode="deblock", global_batch=2, start_step=0)
batch = next(make_batches(cfg, images, **kw))  # the default backend, numpy
assert batch["degraded"].shape == (2, 1, 48, 48), batch["degraded"].shape
cfg.backend = "tf"
try:
    make_batches(cfg, images, **kw)
except Exception as err:
    print(type(err).__name__, err)
"""
    done = _run_without_tf(code)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("ConfigError "), done.stdout
    assert "pip install 'cqrnet-jax[tf]'" in done.stdout


def test_deblock_restores_a_photo_without_tensorflow(tiny_model_prefix, tmp_path):
    import numpy as np
    from PIL import Image
    from skimage import data

    photo = tmp_path / "in.jpg"
    Image.fromarray(data.camera()[:64, :80]).save(photo, quality=20)
    code = f"""
from cqrnet_jax.apps.cli import main
raise SystemExit(main(["deblock", {str(photo)!r}, "-o", {str(tmp_path / "out")!r},
                       "--model", {str(tiny_model_prefix)!r}, "--no-progress"]))
"""
    done = _run_without_tf(code)
    assert done.returncode == 0, done.stderr[-2000:]
    from cqrnet_jax.apps.cli import main

    argv = [str(photo), "-o", str(tmp_path / "here"), "--model", tiny_model_prefix]
    assert main(["deblock", *argv, "--no-progress"]) == 0
    without_tf, here = (np.asarray(Image.open(tmp_path / d / "in.png")) for d in ("out", "here"))
    np.testing.assert_array_equal(without_tf, here)  # the very result of a full install
    assert np.mean(np.abs(here.astype(int) - data.camera()[:64, :80])) > 1  # and restored


def test_serve_without_the_web_extra_says_how_to_install():
    """`serve` on an install without the web extra: one error line naming the extra."""
    code = (
        "sys.modules['uvicorn'] = None\nsys.modules['starlette'] = None\n"
        "from cqrnet_jax.apps.cli import main\nraise SystemExit(main(['serve']))\n"
    )
    done = _run_without_tf(code)
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.strip() == (
        "error: serve needs the web extra (uvicorn is not installed): "
        "pip install -c requirements/constraints.txt -e '.[web]'"
    )

"""The container files, checked without a Docker daemon.

- The image: the files the Dockerfile's COPY lines put in the image (after .dockerignore) are copied to a
  temporary build context, the wheel is built from exactly those, installed into a fresh virtualenv (with
  --no-deps: the dependencies come from the test venv's site-packages, added by a plain path entry, so the
  project's own editable install is NOT visible), and the image's CMD is run from it: `tuner --help`, then
  `tuner serve` with an upload, a finished fit and a render at 2x. A package missing from the COPY lines
  (tuner_cli was) fails here.
- docker-compose.yml: every TUNER_* variable it (or the Dockerfile) sets is a field of service.settings.Settings,
  and every `tuner ...` command it runs parses.
"""

from __future__ import annotations

import fnmatch
import io
import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import sysconfig
import time
import zipfile
from pathlib import Path, PurePosixPath

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[1]


# --- reading the Dockerfile ---------------------------------------------------------------------------------

def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def _words(args: str) -> list[str]:
    """An instruction's arguments: the JSON form or the shell-like form, flags (--chown=...) dropped."""
    while args.startswith("--"):
        args = args.split(None, 1)[1] if " " in args else ""
    words = json.loads(args) if args.startswith("[") else shlex.split(args)
    return [w for w in words if not w.startswith("--")]


def copy_lines(text: str) -> list[tuple[list[str], str]]:
    """Each COPY's sources and its destination, relative to the WORKDIR the install runs in."""
    copies = []
    for word, args in dockerfile_instructions(text):
        if word in ("COPY", "ADD"):
            assert "--from" not in args, "a multi-stage COPY: teach this test about it"
            *srcs, dest = _words(args)
            copies.append((srcs, dest))
    return copies


def dockerignore(root: Path) -> list[str]:
    f = root / ".dockerignore"
    if not f.exists():
        return []
    return [ln.strip() for ln in f.read_text().splitlines() if ln.strip() and not ln.startswith("#")]


def _ignored(rel: PurePosixPath, patterns: list[str]) -> bool:
    """Docker's rule, simplified: a pattern matching the path or one of its parents excludes it; `**/x`
    matches x at any depth."""
    for i in range(1, len(rel.parts) + 1):
        part = PurePosixPath(*rel.parts[:i])
        for p in patterns:
            if fnmatch.fnmatch(str(part), p.rstrip("/")):
                return True
            if p.startswith("**/") and fnmatch.fnmatch(part.name, p[3:]):
                return True
    return False


def build_context(root: Path, dest_root: Path) -> list[str]:
    """Copies what the Dockerfile's COPY lines copy (from the working tree, as `docker build .` would) into
    dest_root (the image's WORKDIR); returns the relative paths copied."""
    patterns = dockerignore(root)
    copied = []
    for srcs, dest in copy_lines((root / "Dockerfile").read_text()):
        for src in srcs:
            s = root / src
            assert s.exists(), f"the Dockerfile copies {src}, which does not exist"
            files = [s] if s.is_file() else sorted(p for p in s.rglob("*") if p.is_file())
            for f in files:
                rel = PurePosixPath(f.relative_to(root).as_posix())
                if _ignored(rel, patterns):
                    continue
                if s.is_file():
                    target = dest_root / dest / s.name if dest.endswith("/") else dest_root / dest
                else:
                    target = dest_root / dest / f.relative_to(s)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(f, target)
                copied.append(str(target.relative_to(dest_root)))
    return copied


def test_dockerfile_parser_reads_copy_lines_and_continuations() -> None:
    text = 'FROM x\n# COPY nothing ./here\nCOPY a.toml b.md ./\nCOPY --chown=1 ["pkg", "./pkg"]\nRUN a \\\n  b\n'
    assert copy_lines(text) == [(["a.toml", "b.md"], "./"), (["pkg"], "./pkg")]
    assert ("RUN", "a  b") in dockerfile_instructions(text)
    assert _ignored(PurePosixPath("pkg/sub/__pycache__/m.pyc"), ["**/__pycache__"])
    assert not _ignored(PurePosixPath("pkg/sub/m.py"), ["**/__pycache__", ".venv"])


def test_the_image_copies_every_package_the_project_installs() -> None:
    """Each top-level package setuptools installs (pyproject's packages.find) is copied, and the install runs
    after the last COPY."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    include = project["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = {p.rstrip("*") for p in include if (ROOT / p.rstrip("*") / "__init__.py").exists()}
    text = (ROOT / "Dockerfile").read_text()
    copied = {PurePosixPath(s).parts[0] for srcs, _ in copy_lines(text) for s in srcs}
    assert packages <= copied, f"the Dockerfile does not copy {sorted(packages - copied)}"
    installs = ('pip install ".', "pip install .")
    steps = [w for w, a in dockerfile_instructions(text)
             if w == "COPY" or (w == "RUN" and any(i in a for i in installs))]
    assert steps[-1] == "RUN", "the project is installed before all its files are copied"


# --- the image, as a wheel in a fresh virtualenv -----------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _clean_env(**extra: str) -> dict[str, str]:
    """The environment of a process in the image: no TUNER_* or PYTHONPATH from the test's own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TUNER_") and k not in ("PYTHONPATH",
                                                                                            "PYTHONHOME")}
    return {**env, "PYTHONWARNINGS": "ignore", **extra}


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A virtualenv with the wheel built from the Dockerfile's files; returns its bin directory."""
    tmp = tmp_path_factory.mktemp("image")
    app = tmp / "app"
    copied = build_context(ROOT, app)
    assert "pyproject.toml" in copied
    wheels = tmp / "wheels"
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                            "-q", "-w", str(wheels), str(app)], capture_output=True, text=True, timeout=240)
    assert build.returncode == 0, build.stdout + build.stderr
    (wheel,) = wheels.glob("tuner_service-*.whl")
    venv = tmp / "venv"
    subprocess.run([sys._base_executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    # The test venv's installed dependencies (torch, fastapi, ...) as a plain path entry: its .pth files, among
    # them the editable install's finder that maps `tuner_cli` to this checkout, are not processed there.
    purelib = Path(subprocess.check_output([str(venv / "bin" / "python"), "-c",
                                            "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                           text=True).strip())
    deps = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (purelib / "_test_deps.pth").write_text("\n".join(sorted(deps)) + "\n")
    install = subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install",
                              "--no-deps", "--no-index", "-q", str(wheel)], capture_output=True, text=True,
                             timeout=240)
    assert install.returncode == 0, install.stdout + install.stderr
    with zipfile.ZipFile(wheel) as z:
        tops = {n.split("/")[0] for n in z.namelist() if not n.split("/")[0].endswith((".dist-info", ".data"))}
    assert {"tuner_cli", "service", "worker", "tuner_model"} <= tops, tops
    return venv / "bin"


def test_the_image_runs_tuner_from_its_own_files(image: Path, tmp_path: Path) -> None:
    where = subprocess.run([str(image / "python"), "-c", "import service, tuner_cli, tuner_model, worker; "
                            "print('\\n'.join(m.__file__ for m in (service, tuner_cli, tuner_model, worker)))"],
                           capture_output=True, text=True, cwd=tmp_path, env=_clean_env(), timeout=120)
    assert where.returncode == 0, where.stderr
    for path in where.stdout.split():
        assert Path(path).is_relative_to(image.parent), f"{path} is not the wheel's copy"
    helped = subprocess.run([str(image / "tuner"), "--help"], capture_output=True, text=True, cwd=tmp_path,
                            env=_clean_env(), timeout=120)
    assert helped.returncode == 0, helped.stderr
    assert "serve" in helped.stdout and "encode" in helped.stdout


def _cmd() -> list[str]:
    (args,) = [a for w, a in dockerfile_instructions((ROOT / "Dockerfile").read_text()) if w == "CMD"]
    return json.loads(args)


def _with_option(cmd: list[str], name: str, value: str) -> list[str]:
    i = cmd.index(name)
    return [*cmd[:i + 1], value, *cmd[i + 2:]]


def test_the_images_command_needs_a_key_to_listen_beyond_loopback(image: Path, tmp_path: Path) -> None:
    """The CMD listens on 0.0.0.0: without a key it stops at once with one line saying what to set."""
    cmd = _with_option(_with_option(_cmd(), "--data-dir", str(tmp_path / "data")), "--port", str(_free_port()))
    assert cmd[0] == "tuner" and "--host" in cmd
    done = subprocess.run([str(image / cmd[0]), *cmd[1:]], capture_output=True, text=True, cwd=tmp_path,
                          env=_clean_env(), timeout=120)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert "TUNER_BOOTSTRAP_KEY" in done.stderr


def test_the_images_command_serves_a_round_trip(image: Path, tmp_path: Path, parrots_path: Path) -> None:
    """The image's CMD (on a free loopback port, a temporary data dir): upload, fit, render at 2x."""
    from PIL import Image

    port = _free_port()
    cmd = _with_option(_with_option(_with_option(_cmd(), "--data-dir", str(tmp_path / "data")), "--port",
                                    str(port)), "--host", "127.0.0.1")
    env = _clean_env(TUNER_DATA_DIR=str(tmp_path / "data"), TUNER_FIT_DEVICE="cpu", TUNER_COMPARISONS="0",
                     TUNER_RENDER_COMPILE="0", TUNER_HEARTBEAT_S="0.3", TUNER_STALE_AFTER_S="3",
                     CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1")
    log = tmp_path / "serve.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen([str(image / cmd[0]), *cmd[1:]], cwd=tmp_path, env=env, stdout=fh,
                                stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "not ready:\n" + log.read_text()[-3000:]
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        r = httpx.post(f"{base}/v1/images", params={"steps": 30, "effort": 1}, timeout=30,
                       files={"file": ("parrots.png", parrots_path.read_bytes(), "image/png")})
        assert r.status_code == 202, r.text
        job_url = r.headers["location"]
        deadline = time.monotonic() + 120
        while (job := httpx.get(base + job_url, timeout=5).json())["status"] not in ("succeeded", "failed"):
            assert time.monotonic() < deadline, f"{job}\n{log.read_text()[-3000:]}"
            time.sleep(0.2)
        assert job["status"] == "succeeded", job
        big = httpx.get(f"{base}/v1/images/{job['image_id']}/render", params={"width": 192}, timeout=60)
        assert big.status_code == 200, big.text
        assert Image.open(io.BytesIO(big.content)).size == (192, 128)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()


# --- docker-compose.yml ---------------------------------------------------------------------------------------

def _compose() -> dict:
    import yaml

    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def _env_names(env: object) -> set[str]:
    if isinstance(env, dict):
        return set(env)
    if isinstance(env, list):  # ["NAME=value", ...]
        return {e.split("=", 1)[0] for e in env}
    return set()


def test_compose_and_dockerfile_set_only_real_settings() -> None:
    from service.settings import Settings

    fields = {f"TUNER_{name.upper()}" for name in Settings.model_fields}
    names = set()
    for svc in _compose()["services"].values():
        names |= {n for n in _env_names(svc.get("environment")) if n.startswith("TUNER_")}
    for word, args in dockerfile_instructions((ROOT / "Dockerfile").read_text()):
        if word == "ENV":
            names |= {w.split("=", 1)[0] for w in shlex.split(args) if w.startswith("TUNER_")}
    assert names, "no TUNER_* settings found: the parser is broken"
    assert names <= fields, f"not settings: {sorted(names - fields)}"


def test_compose_runs_only_tuner_commands_that_exist() -> None:
    from tuner_cli.main import build_parser

    parser = build_parser()
    commands = [svc["command"] for svc in _compose()["services"].values()
                if isinstance(svc.get("command"), list) and svc["command"][0] == "tuner"]
    assert commands
    for cmd in [*commands, _cmd()]:
        parser.parse_args(cmd[1:])  # argparse exits (SystemExit) on an unknown command or option

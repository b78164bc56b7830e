"""``ppml image context``: the build context of a custom application image, signed.

:func:`build_image_context` writes a directory ``docker build`` takes as it is::

    CTX/
      Dockerfile            FROM the base image; COPY app/ and enclave/; nothing else
      .dockerignore         only app/ and enclave/ are sent to the builder
      app/                  a copy of --app DIR (→ /ppml/app)
      enclave/ppml.manifest the Gramine manifest (→ /ppml/enclave)
      enclave/ppml.sig      its SIGSTRUCT, signed with the enclave key
      enclave/ppml.manifest.sgx   gramine-sgx-sign's output, when it was installed
      measurement.txt       mr_enclave / mr_signer to register (not sent to the builder)

The manifest commits to the files *as they will be in the image*: its trusted paths are image
paths. Runtime files (Python, the venv with ppml and pyspark, the JVM, Gramine's glibc, system
libraries: :data:`ppml.deploy.images.RUNTIME_TREES`) are hashed from ``root``, which is ``/``
when the command runs inside the base image (as Gramine Shielded Containers and BigDL build their
manifests against the image's own files); the application is hashed from its copy in ``CTX/app``,
the very bytes the Dockerfile copies. The signing key is used here and never written: the context
holds no private key, and the image is built from the context alone.

Refused at build time: an ``--out`` inside the application (or the application inside it), a key
file inside either, any PEM private key in the application, a runtime path missing from ``root``,
and (through :meth:`Manifest.from_toml`, which reads the manifest back) any key Gramine does not
document or any ``insecure__`` option.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import re
import shutil
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Final

from ppml.core._files import atomic_directory
from ppml.deploy import images
from ppml.errors import InputNotFound, NotAFile, UsageError
from ppml.tee.gramine import Manifest, Measurement, Mount, TrustedFile, sign
from ppml.tee.gramine.build import mount_roots, walk_files
from ppml.tee.gramine.signing import Tool

__all__ = ["CONTEXT_FORMAT", "ENTRY_ARGV", "ImageContext", "build_image_context", "image_manifest"]

CONTEXT_FORMAT: Final = "ppml-image-context/1"
#: The enclave's fixed argv: ``ppml tee gramine-entry`` runs ``submit`` or ``spark-pod`` as
#: ``PPML_GRAMINE_ARGV`` says, and each attests before anything else (ppml.tee.gramine.launch).
ENTRY_ARGV: Final = (images.VENV_PYTHON, "-m", "ppml.cli.main", "tee", "gramine-entry")
_PEM_PRIVATE: Final = re.compile(rb"-----BEGIN [A-Z0-9 ]{0,40}PRIVATE KEY-----")
_CHUNK: Final = 1 << 20


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ImageContext:
    """What :func:`build_image_context` wrote."""

    directory: Path
    dockerfile: Path
    manifest: Path
    sigstruct: Path
    measurement: Measurement
    trusted_files: int


def _inside(path: Path, directory: Path) -> bool:
    return path == directory or directory in path.parents


def _holds_private_key(path: Path, key_bytes: bytes) -> bool:
    """Whether ``path`` holds the enclave key's bytes or a PEM private key (RSA, EC, PKCS#8,
    encrypted, OpenSSH: any ``-----BEGIN … PRIVATE KEY-----``) anywhere in it."""
    tail = b""
    overlap = max(len(key_bytes), 64)
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            window = tail + chunk
            if _PEM_PRIVATE.search(window) or (key_bytes and key_bytes in window):
                return True
            tail = window[-overlap:]
    return False


def _check_places(app_dir: Path, key: Path, out: Path) -> None:
    if _inside(out, app_dir) or _inside(app_dir, out):
        raise UsageError(f"--out {out} and --app {app_dir} overlap: the build context would copy itself or "
                         "the application would hold the context")
    for where in (app_dir, out):
        if _inside(key, where):
            raise UsageError(f"the enclave key {key} is inside {where}: keep it outside the build context "
                             "(it must never reach the image)")


def _copy_app(app_dir: Path, dst: Path, key_bytes: bytes) -> list[Path]:
    """Copy the application into ``dst``; refuse any private key in it. Returns the copies."""
    copies = []
    for source in walk_files(app_dir):
        if source.is_symlink():
            raise UsageError(f"{source} is a symbolic link: the image gets a copy, give the file itself")
        if _holds_private_key(source, key_bytes):
            raise UsageError(f"{source} holds a private key: refusing to put it in the build context "
                             "(move it out of --app)")
        target = dst / source.relative_to(app_dir)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        copies.append(target)
    return copies


def _runtime_files(root: Path) -> list[tuple[str, Path]]:
    """``(image path, file under root)`` for every runtime file the enclave trusts.

    Raises:
        InputNotFound: a runtime path of the base image is missing under ``root``.
    """
    found: dict[str, Path] = {}
    for tree in images.RUNTIME_TREES:
        host = root / tree.path.lstrip("/")
        if not host.exists():
            error = InputNotFound(host)
            error.hint = (f"{tree.path} ({tree.provided_by}) is part of the ppml base image: run `ppml image "
                          "context` inside it (--root /), or point --root at its file system")
            raise error
        for path in walk_files(host):
            found.setdefault("/" + path.relative_to(root).as_posix(), path)
    return sorted(found.items())


def image_manifest(trusted: list[TrustedFile], *, enclave_size: str = "8G", max_threads: int = 64,
                   isv_prod_id: int = 0, isv_svn: int = 0) -> Manifest:
    """The enclave of a ppml application image: argv :data:`ENTRY_ARGV`, Java and Python trusted
    (``trusted``), environment fixed but for :data:`ppml.deploy.images.PASSTHROUGH_ENV`, Gramine's
    glibc at ``/lib``, an in-enclave ``tmpfs`` at ``/tmp`` for Spark's scratch files, the pods'
    Secret files as the only allowed (unhashed) files (:data:`ppml.deploy.images.POD_SECRET_FILES`),
    DCAP attestation, production (non-debug) enclave."""
    library_path = ":".join(["/lib", "/usr/local/lib", "/usr/lib/x86_64-linux-gnu", f"{images.JAVA_HOME}/lib",
                             f"{images.JAVA_HOME}/lib/server"])
    env = {
        "PYTHONPATH": f"{images.SITE_PACKAGES}:{images.APP_DIR}",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONNOUSERSITE": "1",
        "LD_LIBRARY_PATH": library_path,
        "JAVA_HOME": images.JAVA_HOME,
        "SPARK_HOME": images.SPARK_HOME,
        "PATH": f"{images.VENV}/bin:{images.JAVA_HOME}/bin:/usr/local/bin:/usr/bin:/bin",
        "HOME": "/tmp",
        "PPML_TEE_BACKEND": "sgx-gramine",
        "PPML_APP_DIR": images.APP_DIR,
        "PPML_SPARK_ENTRYPOINT": images.SPARK_ENTRYPOINT,
    }
    # Identity mounts of the runtime trees (a file's directory for a single file), the application
    # and the pods' Secret files: what the enclave sees of the image; strict checks apply inside.
    trees = {tree.path for tree in images.RUNTIME_TREES}
    single_files = {t.path for t in trusted} & trees
    directories = ({path.rsplit("/", 1)[0] for path in single_files} | (trees - single_files)
                   | {images.APP_DIR, images.POD_RUN_DIR})
    return Manifest(
        libos_entrypoint=images.PYTHON,
        loader_entrypoint="file:" + images.GRAMINE_LIBOS,
        argv=ENTRY_ARGV,
        env=tuple(env.items()),
        passthrough_env=images.PASSTHROUGH_ENV,
        mounts=tuple(mount_roots(directories - {"/"})),
        extra_mounts=(Mount(path="/lib", uri="file:" + images.GRAMINE_RUNTIME), Mount(path="/tmp", type="tmpfs")),
        trusted_files=tuple(trusted),
        allowed_files=tuple("file:" + path for path in images.POD_SECRET_FILES),
        enclave_size=enclave_size,
        max_threads=max_threads,
        isv_prod_id=isv_prod_id,
        isv_svn=isv_svn,
        remote_attestation="dcap",
        # Spark pods reach the API server, the KMS and each other by Service names.
        runtime_domain_names=True,
    )


def _dockerfile(base_image: str) -> str:
    template = resources.files("ppml.deploy").joinpath("templates", "app.Dockerfile").read_text(encoding="utf-8")
    return (template.replace("@CONTEXT_FORMAT@", CONTEXT_FORMAT).replace("@BASE_IMAGE@", base_image)
            .replace("@APP_DIR@", images.APP_DIR).replace("@ENCLAVE_DIR@", images.ENCLAVE_DIR)
            .replace("@UID@", str(images.IMAGE_UID)).replace("@GID@", str(images.IMAGE_GID)))


_DOCKERIGNORE: Final = """\
# Only the application and the enclave go to the builder (ppml image context).
*
!app
!enclave
"""


def build_image_context(
    *,
    app_dir: Path,
    enclave_key: Path,
    out: Path,
    root: Path = Path("/"),
    base_image: str = "ppml-base:latest",
    enclave_size: str = "8G",
    max_threads: int = 64,
    isv_prod_id: int = 0,
    isv_svn: int = 0,
    date: datetime.date | None = None,
    tool: Tool = "auto",
    progress: Callable[[int, int], None] | None = None,
) -> ImageContext:
    """Write the build context of the application image for ``app_dir`` into ``out`` (which must
    not exist), with the enclave signed by ``enclave_key``.

    Hashing the base image's runtime takes a while (the venv alone holds tens of thousands of
    files): ``progress(hashed, total)`` is called after each file.

    Raises:
        InputNotFound: no such application, key, or runtime path under ``root``.
        OutputExists: ``out`` exists.
        UsageError: ``out``/``app_dir``/the key overlap, the application holds a private key or a
            symbolic link, a bad base image reference, or a manifest ppml refuses.
        (and everything :func:`ppml.tee.gramine.sign` raises)
    """
    app_dir, key, out, root = (Path(os.path.abspath(p)) for p in (app_dir, enclave_key, out, root))
    for path in (app_dir, key, root):
        if not path.exists():
            raise InputNotFound(path)
    if not app_dir.is_dir():
        raise NotAFile(app_dir, "--app must be a directory")
    if not key.is_file():
        raise NotAFile(key, "the enclave key must be a file")
    if not base_image or any(c.isspace() for c in base_image):
        raise UsageError(f"base image {base_image!r} must be an image reference without spaces")
    _check_places(app_dir, Path(os.path.realpath(key)), out)
    key_bytes = key.read_bytes().strip()
    runtime = _runtime_files(root)

    with atomic_directory(out, overwrite=False) as staging:
        copies = _copy_app(app_dir, staging / "app", key_bytes)
        sources = [*runtime, *((f"{images.APP_DIR}/{c.relative_to(staging / 'app').as_posix()}", c)
                               for c in copies)]
        trusted = []
        for image_path, host in sources:
            trusted.append(TrustedFile(path=image_path, sha256=TrustedFile.of(host).sha256))
            if progress is not None:
                progress(len(trusted), len(sources))
        manifest = image_manifest(trusted, enclave_size=enclave_size, max_threads=max_threads,
                                  isv_prod_id=isv_prod_id, isv_svn=isv_svn)
        enclave = staging / "enclave"
        enclave.mkdir()
        manifest_path = enclave / f"{images.ENCLAVE_NAME}.manifest"
        manifest.write(manifest_path)
        if Manifest.load(manifest_path) != manifest:  # reads back through check_manifest_keys
            raise UsageError("the manifest does not read back as written")
        _, measurement = sign(manifest_path, key, enclave / f"{images.ENCLAVE_NAME}.sig", date=date, tool=tool,
                              out_manifest_sgx=enclave / f"{images.ENCLAVE_NAME}.manifest.sgx")
        (staging / "Dockerfile").write_text(_dockerfile(base_image), encoding="utf-8")
        (staging / ".dockerignore").write_text(_DOCKERIGNORE, encoding="utf-8")
        (staging / "measurement.txt").write_text(
            f"mr_enclave: {measurement.mr_enclave.hex()}\nmr_signer: {measurement.mr_signer.hex()}\n"
            f"source: {measurement.source}\n", encoding="utf-8")
        for path in walk_files(staging):
            if _holds_private_key(path, key_bytes):
                raise UsageError(f"{path.name} in the build context holds a private key")
    return ImageContext(directory=out, dockerfile=out / "Dockerfile",
                        manifest=out / "enclave" / f"{images.ENCLAVE_NAME}.manifest",
                        sigstruct=out / "enclave" / f"{images.ENCLAVE_NAME}.sig", measurement=measurement,
                        trusted_files=len(manifest.trusted_files))

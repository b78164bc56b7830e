"""The Kubernetes manifests of the KMS/AS and the Spark jobs namespace: a kustomize tree, rendered.

The tree ships as package data (``ppml/deploy/kustomize``): ``base`` and the overlays ``dev``
and ``prod``, with every value in ONE file, ``base/values.env`` (a ``configMapGenerator`` makes
it the local-only ConfigMap ``ppml-values`` and kustomize ``replacements`` copy each value into
the objects). ``kubectl kustomize`` renders it; where there is no kubectl, :func:`kustomize_build`
does, implementing exactly the kustomize features the tree uses and refusing every other one
(so the two can only disagree loudly):

``resources``
    files (multi-document YAML) and directories holding a kustomization.
``configMapGenerator``
    ``envs`` and ``literals``, with ``options.disableNameSuffixHash: true`` (required: the
    hash suffix is not implemented), ``options.annotations`` and ``options.labels``.
``patches``
    strategic merge patches from ``path`` or inline ``patch``, found by kind, name and
    namespace. Maps merge; ``null`` deletes a key; lists of scalars are replaced; lists of
    objects merge by the Kubernetes merge key of their field (:data:`MERGE_KEYS`), new items
    first as kustomize puts them; any other list of objects is refused.
``replacements``
    ``source`` {kind, name, namespace, fieldPath} and ``targets`` {select {kind, name,
    namespace}, fieldPaths, options {delimiter, index, create}}; field paths with ``.``,
    ``[key=value]`` list selectors, ``[a.b]`` keys holding dots and numeric list indices.
Objects annotated ``config.kubernetes.io/local-config: "true"`` are dropped from the output, and
the result is sorted by kind as kustomize's legacy order does, then by namespace and name
(kubectl's tie order differs; the objects are the same).

:func:`render` renders an overlay with kubectl if present (else :func:`kustomize_build`) from a
copy of the tree holding the values file it is given, after :func:`check_values`, and then
:func:`check_rendered` refuses what a cluster cannot work with: a loopback KMS or attestation URL
(in a pod, ``localhost`` is the pod itself).
"""

from __future__ import annotations

import copy
import ipaddress
import itertools
import re
import shutil
import subprocess
import tempfile
import urllib.parse
from collections.abc import Iterable, Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any, Final

from ppml.errors import UsageError

__all__ = [
    "ENGINES",
    "MERGE_KEYS",
    "OVERLAYS",
    "VALUE_KEYS",
    "check_rendered",
    "check_values",
    "dump_yaml",
    "is_loopback_host",
    "kustomize_build",
    "load_yaml",
    "read_values",
    "render",
    "strategic_merge",
    "tree",
]

#: The overlays shipped in the tree; each one deploys to a cluster.
OVERLAYS: Final = ("dev", "prod")
ENGINES: Final = ("auto", "kubectl", "python")

#: Every key of ``values.env``, all required.
VALUE_KEYS: Final = ("image", "kms_dns_name", "kms_url", "attestation_url", "pccs_url", "postgres_url",
                     "aesmd_image", "cert_issuer")
_URL_KEYS: Final = ("kms_url", "attestation_url", "pccs_url")

#: Merge keys of the Kubernetes object lists a patch may merge (``patchMergeKey`` in the API).
MERGE_KEYS: Final = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "env": "name",
    "imagePullSecrets": "name",
    "hostAliases": "ip",
}

_KUSTOMIZATION_FILES: Final = ("kustomization.yaml", "kustomization.yml", "Kustomization")
_SUPPORTED: Final = frozenset({"apiVersion", "kind", "resources", "configMapGenerator", "patches", "replacements"})
_LOCAL_CONFIG: Final = "config.kubernetes.io/local-config"
# kustomize's legacy order (api/resid/gvk.go): these kinds first, in this order; webhooks last.
_ORDER_FIRST: Final = ("Namespace", "ResourceQuota", "StorageClass", "CustomResourceDefinition", "ServiceAccount",
                       "PodSecurityPolicy", "Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding", "ConfigMap",
                       "Secret", "Endpoints", "Service", "LimitRange", "PriorityClass", "PersistentVolume",
                       "PersistentVolumeClaim", "Deployment", "StatefulSet", "CronJob", "PodDisruptionBudget")
_ORDER_LAST: Final = ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration")
_ENV_KEY = re.compile(r"[-._a-zA-Z0-9]+\Z")
_PATH_PART = re.compile(r"\[[^\]]*\]|[^.\[]+")

Object = dict[str, Any]


def _yaml():  # type: ignore[no-untyped-def]
    try:
        import yaml
    except ImportError:
        raise UsageError("rendering Kubernetes manifests needs PyYAML: pip install 'ppml[deploy]'") from None
    return yaml


def load_yaml(text: str, *, where: str) -> list[Object]:
    """The objects of a multi-document YAML text (empty documents skipped).

    Raises:
        UsageError: not YAML, or a document that is not a mapping.
    """
    yaml = _yaml()
    try:
        documents = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        raise UsageError(f"{where}: not YAML: {exc}") from None
    for document in documents:
        if not isinstance(document, dict):
            raise UsageError(f"{where}: every document must be a mapping")
    return documents


def dump_yaml(objects: Iterable[Object]) -> str:
    """Objects as multi-document YAML with sorted keys (as kubectl writes them); multi-line
    strings as literal blocks."""
    yaml = _yaml()

    class _Dumper(yaml.SafeDumper):  # type: ignore[name-defined]
        pass

    def _string(dumper: Any, value: str) -> Any:
        style = "|" if "\n" in value and not value.endswith((" ", "\t")) else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

    _Dumper.add_representer(str, _string)
    return str(yaml.dump_all(list(objects), Dumper=_Dumper, sort_keys=True, default_flow_style=False,
                             allow_unicode=True, width=1 << 16))


def tree() -> Path:
    """The kustomize tree shipped in the package (a directory on disk)."""
    root = resources.files("ppml.deploy").joinpath("kustomize")
    return Path(str(root))


# -- values ------------------------------------------------------------------------------------


def read_values(path: Path) -> dict[str, str]:
    """``KEY=VALUE`` lines as kustomize's ``envs`` reads them (``#`` comments and blank lines
    skipped, the value verbatim after the first ``=``).

    Raises:
        UsageError: a line without ``=``, an invalid or repeated key.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"{path}: no such values file") from None
    return _parse_env(text, where=str(path))


def _parse_env(text: str, *, where: str) -> dict[str, str]:
    values: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.lstrip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not _ENV_KEY.match(key):
            raise UsageError(f"{where}:{number}: expected KEY=VALUE")
        if key in values:
            raise UsageError(f"{where}:{number}: {key} is set twice")
        values[key] = value
    return values


def is_loopback_host(host: str) -> bool:
    """Whether ``host`` names the machine (or pod) itself: ``localhost`` and ``*.localhost``,
    127.0.0.0/8, ``::1``, their IPv4-mapped forms and the unspecified addresses."""
    host = host.strip("[]").rstrip(".").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback or address.is_unspecified


def _loopback_message(what: str, value: str) -> str:
    return (f"{what} {value!r} is a loopback address: in a Kubernetes pod it names the pod itself, not the "
            "service; use the service's DNS name (e.g. https://ppml-kms.ppml.svc:9000)")


def check_values(values: Mapping[str, str]) -> None:
    """Refuse values a cluster deployment cannot use.

    Raises:
        UsageError: a missing or unknown key; an image reference with spaces; a URL that is not
            ``https://HOST[:PORT]`` or names a loopback host (``localhost``, 127.0.0.0/8, ``::1``,
            the unspecified address); a PostgreSQL URL that is not ``postgresql://`` or carries a
            password (it belongs in the Secret ``ppml-postgres``).
    """
    missing = [key for key in VALUE_KEYS if key not in values]
    unknown = sorted(set(values) - set(VALUE_KEYS))
    if missing:
        raise UsageError(f"the values lack {', '.join(missing)}")
    if unknown:
        raise UsageError(f"unknown values {', '.join(unknown)} (known: {', '.join(VALUE_KEYS)})")
    for key in ("image", "aesmd_image"):
        if not values[key] or any(c.isspace() for c in values[key]):
            raise UsageError(f"{key} {values[key]!r} must be an image reference without spaces")
    for key in _URL_KEYS:
        url = urllib.parse.urlsplit(values[key])
        if url.scheme != "https" or not url.hostname:
            raise UsageError(f"{key} {values[key]!r} must be an https:// URL")
        if is_loopback_host(url.hostname):
            raise UsageError(_loopback_message(key, values[key]))
    name = values["kms_dns_name"]
    if is_loopback_host(name):
        raise UsageError(_loopback_message("kms_dns_name", name))
    if not name or "/" in name or ":" in name or any(c.isspace() for c in name):
        raise UsageError(f"kms_dns_name {name!r} must be a DNS name (no scheme, no port)")
    kms_host = urllib.parse.urlsplit(values["kms_url"]).hostname
    if kms_host != name.lower():
        raise UsageError(f"kms_url names {kms_host}, but the certificate is for kms_dns_name {name}: "
                         "clients would refuse it")
    postgres = urllib.parse.urlsplit(values["postgres_url"])
    if postgres.scheme not in ("postgresql", "postgres") or not postgres.hostname:
        raise UsageError(f"postgres_url {values['postgres_url']!r} must be postgresql://USER@HOST[:PORT]/DB")
    if postgres.password is not None:
        raise UsageError("postgres_url must not carry a password: put it in the pgpass key of the Secret "
                         "ppml-postgres")
    if is_loopback_host(postgres.hostname):
        raise UsageError(_loopback_message("postgres_url", values["postgres_url"]))
    if not values["cert_issuer"] or any(c.isspace() for c in values["cert_issuer"]):
        raise UsageError("cert_issuer must name a cert-manager ClusterIssuer")


def check_rendered(objects: Sequence[Object]) -> None:
    """Refuse rendered objects a cluster cannot work with: a loopback URL in the jobs' client
    ConfigMap (``PPML_*_URL``), a loopback name in a Certificate, or a loopback ``--db`` host.

    Raises:
        UsageError: naming the object and the value.
    """
    for obj in objects:
        kind, name = obj.get("kind"), obj.get("metadata", {}).get("name")
        if kind == "ConfigMap":
            for key, value in (obj.get("data") or {}).items():
                host = urllib.parse.urlsplit(str(value)).hostname if "://" in str(value) else None
                if key.endswith("_URL") and host and is_loopback_host(host):
                    raise UsageError(_loopback_message(f"ConfigMap {name} {key}", str(value)))
        elif kind == "Certificate":
            spec = obj.get("spec", {})
            for dns_name in [spec.get("commonName", ""), *spec.get("dnsNames", [])]:
                if dns_name and is_loopback_host(dns_name):
                    raise UsageError(_loopback_message(f"Certificate {name} name", dns_name))
        elif kind == "Deployment":
            pod = obj.get("spec", {}).get("template", {}).get("spec", {})
            for container in pod.get("containers", []):
                args = [str(a) for a in container.get("args", [])]
                for flag, value in itertools.pairwise(args):
                    host = urllib.parse.urlsplit(value).hostname if flag == "--db" else None
                    if host and is_loopback_host(host):
                        raise UsageError(_loopback_message(f"Deployment {name} --db", value))


# -- the renderer ------------------------------------------------------------------------------


def _kustomization(directory: Path) -> tuple[Path, Object]:
    for name in _KUSTOMIZATION_FILES:
        path = directory / name
        if path.is_file():
            documents = load_yaml(path.read_text(encoding="utf-8"), where=str(path))
            if len(documents) != 1:
                raise UsageError(f"{path}: expected one document")
            return path, documents[0]
    raise UsageError(f"{directory}: no kustomization.yaml")


def _key(obj: Object) -> tuple[str, str, str]:
    metadata = obj.get("metadata") or {}
    return str(obj.get("kind", "")), str(metadata.get("namespace", "")), str(metadata.get("name", ""))


def _matches(obj: Object, selector: Mapping[str, Any]) -> bool:
    kind, namespace, name = _key(obj)
    unknown = set(selector) - {"kind", "name", "namespace", "version", "group"}
    if unknown:
        raise UsageError(f"selector fields {', '.join(sorted(unknown))} are not implemented; render with kubectl")
    api_version = str(obj.get("apiVersion", ""))
    group, _, version = api_version.rpartition("/")
    return ((selector.get("kind") in (None, kind)) and (selector.get("name") in (None, name))
            and (selector.get("namespace") in (None, namespace)) and (selector.get("group") in (None, group))
            and (selector.get("version") in (None, version)))


def _generate_config_map(spec: Mapping[str, Any], directory: Path, where: str) -> Object:
    unknown = set(spec) - {"name", "namespace", "envs", "literals", "options", "behavior"}
    if unknown or spec.get("behavior", "create") != "create":
        raise UsageError(f"{where}: configMapGenerator fields {', '.join(sorted(unknown)) or 'behavior'} "
                         "are not implemented; render with kubectl")
    options = spec.get("options") or {}
    if options.get("disableNameSuffixHash") is not True or set(options) - {"disableNameSuffixHash", "annotations",
                                                                           "labels"}:
        raise UsageError(f"{where}: configMapGenerator {spec.get('name')} needs options.disableNameSuffixHash: "
                         "true (name hashes are not implemented; render with kubectl)")
    data: dict[str, str] = {}
    for env in spec.get("envs") or []:
        data.update(_parse_env((directory / env).read_text(encoding="utf-8"), where=str(directory / env)))
    for literal in spec.get("literals") or []:
        data.update(_parse_env(str(literal), where=where))
    metadata: Object = {"name": spec["name"]}
    if spec.get("namespace"):
        metadata["namespace"] = spec["namespace"]
    if options.get("annotations"):
        metadata["annotations"] = dict(options["annotations"])
    if options.get("labels"):
        metadata["labels"] = dict(options["labels"])
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": data}


def strategic_merge(original: Any, patch: Any, *, field: str = "") -> Any:
    """``patch`` merged into ``original`` as a strategic merge patch does (the subset the module
    docstring lists); neither argument is changed.

    Raises:
        UsageError: a ``$patch`` directive, or a list of objects whose merge key is unknown.
    """
    if isinstance(original, dict) and isinstance(patch, dict):
        merged = copy.deepcopy(original)
        for key, value in patch.items():
            if key.startswith("$"):
                raise UsageError(f"patch directive {key} is not implemented; render with kubectl")
            if value is None:
                merged.pop(key, None)
            elif key in merged:
                merged[key] = strategic_merge(merged[key], value, field=key)
            else:
                merged[key] = strategic_merge(None, value, field=key)
        return merged
    if isinstance(patch, dict):
        return {k: strategic_merge(None, v, field=k) for k, v in patch.items() if v is not None}
    if isinstance(patch, list) and isinstance(original, list) and any(isinstance(i, dict) for i in patch):
        merge_key = MERGE_KEYS.get(field)
        if merge_key is None:
            raise UsageError(f"a patch of the list {field!r}: its merge key is not known here; render with kubectl")
        existing = list(original)
        merged_items = copy.deepcopy(existing)
        added = []
        for item in patch:
            position = next((i for i, old in enumerate(existing) if old.get(merge_key) == item.get(merge_key)), None)
            if position is None:
                added.append(strategic_merge(None, item, field=field))
            else:
                merged_items[position] = strategic_merge(existing[position], item, field=field)
        return added + merged_items
    return copy.deepcopy(patch)


def _path_parts(field_path: str) -> list[str]:
    parts = _PATH_PART.findall(field_path)
    if "".join(p if p.startswith("[") else f".{p}" for p in parts).lstrip(".") != field_path.replace(".[", "["):
        raise UsageError(f"field path {field_path!r} is not implemented; render with kubectl")
    return parts


def _step(node: Any, part: str, *, create: bool, path: str) -> Any:
    if part.startswith("[") and "=" in part:
        key, _, wanted = part[1:-1].partition("=")
        if not isinstance(node, list):
            raise UsageError(f"{path}: {part} selects from a list, found {type(node).__name__}")
        found = [item for item in node if isinstance(item, dict) and str(item.get(key)) == wanted]
        if len(found) != 1:
            raise UsageError(f"{path}: {part} matches {len(found)} items")
        return found[0]
    key = _bracket_key(part, path)
    if isinstance(node, list):
        if not key.isdigit() or int(key) >= len(node):
            raise UsageError(f"{path}: no list item {key}")
        return node[int(key)]
    if not isinstance(node, dict):
        raise UsageError(f"{path}: cannot descend into {type(node).__name__}")
    if key not in node:
        if not create:
            raise UsageError(f"{path}: no field {key}")
        node[key] = {}
    return node[key]


def _bracket_key(part: str, path: str) -> str:
    """A path element; ``[a.b]`` quotes a key holding dots (kustomize reads ``[ab]`` as a broken
    list selector, and so does this)."""
    if not part.startswith("["):
        return part
    if "." not in part:
        raise UsageError(f"{path}: {part} must be [field=value] (brackets quote keys with dots only)")
    return part[1:-1]


def _get(obj: Object, field_path: str) -> Any:
    node: Any = obj
    for part in _path_parts(field_path):
        node = _step(node, part, create=False, path=field_path)
    return node


def _set(obj: Object, field_path: str, value: Any, options: Mapping[str, Any]) -> None:
    parts = _path_parts(field_path)
    node: Any = obj
    for part in parts[:-1]:
        node = _step(node, part, create=bool(options.get("create")), path=field_path)
    last = _bracket_key(parts[-1], field_path)
    if isinstance(node, list):
        if not last.isdigit() or int(last) >= len(node):
            raise UsageError(f"{field_path}: no list item {last}")
        index: int | str = int(last)
        current = node[int(last)]
    elif isinstance(node, dict):
        if last not in node and not options.get("create"):
            raise UsageError(f"{field_path}: no field {last}")
        index, current = last, node.get(last)
    else:
        raise UsageError(f"{field_path}: cannot set a field of {type(node).__name__}")
    if "delimiter" in options:
        pieces = str(current).split(options["delimiter"])
        position = int(options.get("index", 0))
        if not 0 <= position < len(pieces):
            raise UsageError(f"{field_path}: no piece {position} when split at {options['delimiter']!r}")
        pieces[position] = str(value)
        value = options["delimiter"].join(pieces)
    node[index] = copy.deepcopy(value)


def _replace(objects: list[Object], replacement: Mapping[str, Any], where: str) -> None:
    if set(replacement) - {"source", "targets"}:
        raise UsageError(f"{where}: replacement fields {', '.join(sorted(set(replacement) - {'source', 'targets'}))} "
                         "are not implemented; render with kubectl")
    source = dict(replacement["source"])
    field_path = source.pop("fieldPath", "metadata.name")
    sources = [obj for obj in objects if _matches(obj, source)]
    if len(sources) != 1:
        raise UsageError(f"{where}: the replacement source {source} matches {len(sources)} objects")
    value = _get(sources[0], field_path)
    for target in replacement.get("targets") or []:
        if set(target) - {"select", "fieldPaths", "options"}:
            raise UsageError(f"{where}: replacement target fields other than select/fieldPaths/options "
                             "are not implemented; render with kubectl")
        options = target.get("options") or {}
        if set(options) - {"delimiter", "index", "create"}:
            raise UsageError(f"{where}: replacement options {sorted(options)} are not implemented")
        for obj in objects:
            if _matches(obj, target["select"]):
                for path in target["fieldPaths"]:
                    _set(obj, path, value, options)


def _build(directory: Path) -> list[Object]:
    path, kustomization = _kustomization(directory)
    unknown = set(kustomization) - _SUPPORTED
    if unknown:
        raise UsageError(f"{path}: {', '.join(sorted(unknown))}: not implemented by ppml's renderer; render with "
                         "kubectl (kubectl kustomize)")
    objects: list[Object] = []
    for entry in kustomization.get("resources") or []:
        resource = directory / entry
        if resource.is_dir():
            objects.extend(_build(resource))
        elif resource.is_file():
            objects.extend(load_yaml(resource.read_text(encoding="utf-8"), where=str(resource)))
        else:
            raise UsageError(f"{path}: resource {entry} does not exist")
    for spec in kustomization.get("configMapGenerator") or []:
        objects.append(_generate_config_map(spec, directory, str(path)))
    seen: set[tuple[str, str, str]] = set()
    for obj in objects:
        if _key(obj) in seen:
            raise UsageError(f"{path}: {'/'.join(_key(obj))} is defined twice")
        seen.add(_key(obj))
    for patch_spec in kustomization.get("patches") or []:
        if set(patch_spec) - {"path", "patch"}:
            raise UsageError(f"{path}: patch fields other than path/patch (targets, options) are not implemented; "
                             "render with kubectl")
        if "path" in patch_spec:
            patch_file = directory / patch_spec["path"]
            text, where = patch_file.read_text(encoding="utf-8"), str(patch_file)
        else:
            text, where = str(patch_spec["patch"]), str(path)
        for patch in load_yaml(text, where=where):
            kind, namespace, name = _key(patch)
            found = [i for i, obj in enumerate(objects)
                     if _key(obj)[0] == kind and _key(obj)[2] == name and (not namespace or _key(obj)[1] == namespace)]
            if len(found) != 1:
                raise UsageError(f"{where}: the patch of {kind} {name} matches {len(found)} objects")
            objects[found[0]] = strategic_merge(objects[found[0]], patch)
    for replacement in kustomization.get("replacements") or []:
        _replace(objects, replacement, str(path))
    return objects


def _order(obj: Object) -> tuple[int, str, str, str, str]:
    kind, namespace, name = _key(obj)
    if kind in _ORDER_FIRST:
        rank = _ORDER_FIRST.index(kind)
    elif kind in _ORDER_LAST:
        rank = len(_ORDER_FIRST) + 1 + _ORDER_LAST.index(kind)
    else:
        rank = len(_ORDER_FIRST)
    return rank, kind, str(obj.get("apiVersion", "")), namespace, name


def kustomize_build(directory: Path) -> list[Object]:
    """Render the kustomization in ``directory`` as ``kubectl kustomize`` does (the subset in the
    module docstring), without kubectl.

    Raises:
        UsageError: a kustomize feature outside that subset, or an inconsistent tree.
    """
    objects = [obj for obj in _build(directory)
               if str(((obj.get("metadata") or {}).get("annotations") or {}).get(_LOCAL_CONFIG)) != "true"]
    return sorted(objects, key=_order)


def _kubectl_build(kubectl: str, directory: Path) -> list[Object]:
    result = subprocess.run([kubectl, "kustomize", str(directory)], capture_output=True, text=True, timeout=120)
    if result.returncode:
        raise UsageError(f"kubectl kustomize {directory} failed: {result.stderr.strip()[-2000:]}")
    return load_yaml(result.stdout, where="kubectl kustomize")


def render(overlay: str, *, values: Path | None = None, engine: str = "auto",
           kubectl: str | None = None) -> tuple[list[Object], str]:
    """Render ``overlay`` (``dev`` or ``prod``) with the tree's values or those in ``values``,
    checked for a cluster; returns the objects and the engine that rendered them.

    ``engine`` is ``kubectl`` (``kubectl kustomize``), ``python`` (:func:`kustomize_build`) or
    ``auto`` (kubectl when ``kubectl`` or ``PATH`` names one).

    Raises:
        UsageError: an unknown overlay or engine, kubectl asked for but absent, or values or
            rendered objects refused by :func:`check_values` / :func:`check_rendered`.
    """
    if overlay not in OVERLAYS:
        raise UsageError(f"overlay must be one of {', '.join(OVERLAYS)}, not {overlay!r}")
    if engine not in ENGINES:
        raise UsageError(f"engine must be one of {', '.join(ENGINES)}, not {engine!r}")
    executable = kubectl or shutil.which("kubectl")
    if engine == "kubectl" and not executable:
        raise UsageError("no kubectl on PATH: install it, or render with --engine python")
    use_kubectl = engine == "kubectl" or (engine == "auto" and executable is not None)
    source = tree()
    with tempfile.TemporaryDirectory(prefix="ppml-kustomize-") as scratch:
        copy_root = Path(scratch) / "kustomize"
        shutil.copytree(source, copy_root, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        if values is not None:
            shutil.copyfile(values, copy_root / "base" / "values.env")
        check_values(read_values(copy_root / "base" / "values.env"))
        directory = copy_root / "overlays" / overlay
        if use_kubectl:
            assert executable is not None
            objects = sorted(_kubectl_build(executable, directory), key=_order)
        else:
            objects = kustomize_build(directory)
    check_rendered(objects)
    return objects, "kubectl" if use_kubectl else "python"

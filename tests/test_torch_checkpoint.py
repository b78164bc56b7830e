"""Encrypted PyTorch checkpoints (ppml.torch.checkpoint, issue 13 point 2): model and optimizer state
round-trip with the same structure and key types, training resumes exactly, nothing is unpickled,
writes are atomic, and every altered, truncated, foreign or plaintext file is refused with ppml's
error; load_into never half-loads a module."""

from __future__ import annotations

import math
import os
import pickle
import signal
import subprocess
import sys
import textwrap
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from ppml.core.envelope import encrypt_file
from ppml.errors import InputNotFound, InvalidCiphertext, NotAnEnvelope, OutputExists, UsageError
from ppml.kms.local import LocalKeyStore
from ppml.torch.checkpoint import MAX_DEPTH, load, load_into, save


def assert_same(got: Any, expected: Any, where: str = "state") -> None:
    """Equal values of the same types, key types and container kinds (tensors: dtype, shape, values)."""
    assert type(got) is type(expected), f"{where}: {type(got)} != {type(expected)}"
    if isinstance(expected, torch.Tensor):
        assert got.dtype == expected.dtype and got.shape == expected.shape, where
        assert torch.equal(got, expected.detach().cpu()), where
    elif isinstance(expected, dict):
        assert list(got) == list(expected), f"{where}: keys {list(got)} != {list(expected)}"
        for (key, value), got_key in zip(expected.items(), got, strict=True):
            assert type(got_key) is type(key), f"{where}: key {key!r}"
            assert_same(got[key], value, f"{where}[{key!r}]")
        if hasattr(expected, "_metadata"):
            assert got._metadata == expected._metadata, where
    elif isinstance(expected, list | tuple):
        assert len(got) == len(expected), where
        for i, (a, b) in enumerate(zip(got, expected, strict=True)):
            assert_same(a, b, f"{where}[{i}]")
    elif isinstance(expected, float) and math.isnan(expected):
        assert math.isnan(got), where
    else:
        assert got == expected, where


class Net(torch.nn.Module):
    def __init__(self, hidden: int = 8, out: int = 3) -> None:
        super().__init__()
        self.layers = torch.nn.Sequential(torch.nn.Linear(4, hidden), torch.nn.BatchNorm1d(hidden), torch.nn.ReLU(),
                                          torch.nn.Linear(hidden, out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def trained(optimizer_type: Callable[..., torch.optim.Optimizer], steps: int = 3,
            **options: Any) -> tuple[Net, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = Net()
    optimizer = optimizer_type(model.parameters(), **options)
    for _ in range(steps):
        step(model, optimizer, seed=_)
    return model, optimizer


def step(model: Net, optimizer: torch.optim.Optimizer, seed: int) -> None:
    generator = torch.Generator().manual_seed(100 + seed)
    x, y = torch.randn(16, 4, generator=generator), torch.randint(0, 3, (16,), generator=generator)
    optimizer.zero_grad()
    torch.nn.functional.cross_entropy(model(x), y).backward()
    optimizer.step()


OPTIMIZERS = {
    "sgd-momentum": (torch.optim.SGD, {"lr": 0.1, "momentum": 0.9}),
    "adam": (torch.optim.Adam, {"lr": 0.01}),
}


# -- round trips ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_model_and_optimizer_state_round_trip_with_their_types(name: str, tmp_path: Path, key_store: LocalKeyStore,
                                                               key_id: str) -> None:
    kind, options = OPTIMIZERS[name]
    model, optimizer = trained(kind, **options)
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": 3, "loss": 0.25,
             "note": "résumé", "done": False, "best": None}
    save(state, tmp_path / "ckpt", kms=key_store, key_id=key_id)
    loaded = load(tmp_path / "ckpt", kms=key_store)
    assert_same(loaded, state)
    # What load_state_dict relies on: integer parameter keys, tuples, the modules' versions.
    assert list(loaded["optimizer"]["state"]) == [0, 1, 2, 3, 4, 5]
    assert isinstance(loaded["model"], OrderedDict) and loaded["model"]._metadata["layers.1"] == {"version": 2}
    if name == "adam":
        assert loaded["optimizer"]["param_groups"][0]["betas"] == (0.9, 0.999)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_training_resumed_from_a_checkpoint_takes_the_same_next_step(name: str, tmp_path: Path,
                                                                     key_store: LocalKeyStore, key_id: str) -> None:
    kind, options = OPTIMIZERS[name]
    model, optimizer = trained(kind, **options)
    save({"model": model.state_dict(), "optimizer": optimizer.state_dict()}, tmp_path / "ckpt", kms=key_store,
         key_id=key_id)
    step(model, optimizer, seed=3)  # the uninterrupted run

    torch.manual_seed(123)  # a fresh process would start from other weights
    resumed = Net()
    resumed_optimizer = kind(resumed.parameters(), **options)
    load_into(resumed, tmp_path / "ckpt", kms=key_store, state_key="model")
    resumed_optimizer.load_state_dict(load(tmp_path / "ckpt", kms=key_store)["optimizer"])
    step(resumed, resumed_optimizer, seed=3)
    assert_same(resumed.state_dict(), model.state_dict())
    assert_same(resumed_optimizer.state_dict(), optimizer.state_dict())


def test_tied_weights_are_stored_once_and_stay_one_tensor(tmp_path: Path, key_store: LocalKeyStore,
                                                          key_id: str) -> None:
    class Tied(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = torch.nn.Embedding(1000, 64)
            self.head = torch.nn.Linear(64, 1000, bias=False)
            self.head.weight = self.embed.weight

    model = Tied()
    save(model.state_dict(), tmp_path / "tied", kms=key_store, key_id=key_id)
    save({"embed.weight": model.embed.weight.detach()}, tmp_path / "once", kms=key_store, key_id=key_id)
    assert abs((tmp_path / "tied").stat().st_size - (tmp_path / "once").stat().st_size) < 200
    loaded = load(tmp_path / "tied", kms=key_store)
    assert loaded["embed.weight"] is loaded["head.weight"]
    fresh = Tied()
    load_into(fresh, tmp_path / "tied", kms=key_store)
    assert fresh.head.weight is fresh.embed.weight and torch.equal(fresh.embed.weight, model.embed.weight)


def test_views_non_contiguous_and_overlapping_tensors_come_back_equal(tmp_path: Path, key_store: LocalKeyStore,
                                                                      key_id: str) -> None:
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    state = {"whole": base, "transposed": base.t(), "row": base[1], "rows": base[1:3], "column": base[:, 2],
             "again": base, "scalar": torch.tensor(7), "empty": torch.zeros(0, 3), "other_empty": torch.zeros(0, 3),
             "dtypes": [torch.ones(2, dtype=dtype) for dtype in (torch.float16, torch.bfloat16, torch.int8,
                                                                 torch.uint8, torch.bool, torch.float64)]}
    save(state, tmp_path / "views", kms=key_store, key_id=key_id)
    loaded = load(tmp_path / "views", kms=key_store)
    assert_same(loaded, state)
    assert loaded["whole"] is loaded["again"]
    assert base[0, 0] == 0  # nothing was written into the caller's tensors


def test_json_scalars_keep_their_types(tmp_path: Path, key_store: LocalKeyStore, key_id: str) -> None:
    state: dict[Any, Any] = {
        "floats": [0.0, -0.0, 1e-300, 1.5, math.inf, -math.inf, math.nan], "ints": [0, -1, 2**80],
        "bools": [True, False], 1: "int key", "1": "str key", -7: {2: (1, [2, (3,)])}, "empty": [{}, [], ()],
        "text": "\u0000\ud7ff\U0001f600",
    }
    save(state, tmp_path / "scalars", kms=key_store, key_id=key_id)
    loaded = load(tmp_path / "scalars", kms=key_store)
    assert_same(loaded, state)
    assert math.copysign(1, loaded["floats"][1]) == -1


SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.lists(inner, max_size=4).map(tuple)
    | st.dictionaries(st.integers() | st.text(max_size=4), inner, max_size=4),
    max_leaves=20,
)


@given(state=st.dictionaries(st.text(max_size=4), VALUES, max_size=4))
def test_any_structure_of_json_scalars_round_trips(state: dict[str, Any],
                                                   tmp_path_factory: pytest.TempPathFactory) -> None:
    directory = tmp_path_factory.mktemp("property")
    store = LocalKeyStore(directory / "keys")
    key = store.create_primary_key().key_id
    save(state, directory / "ckpt", kms=store, key_id=key)
    assert_same(load(directory / "ckpt", kms=store), state)


# -- what is refused when saving -------------------------------------------------------------------


@pytest.mark.parametrize(("value", "where", "what"), [
    ({"model": {"w": torch.zeros(2)}, "sampler": object()}, "state['sampler']", "type object is neither"),
    ({"opt": {"state": {0: {"ids": {1, 2}}}}}, "state['opt']['state'][0]['ids']", "type set"),
    ({"raw": [b"bytes"]}, "state['raw'][0]", "type bytes"),
    ({"bad key": {1.5: 2}}, "state['bad key']", "keys are strings or integers"),
    ({"sparse": torch.zeros(3, 3).to_sparse()}, "state['sparse']", "dense"),
    ({"complex": torch.zeros(2, dtype=torch.complex128)}, "state['complex']", "safetensors does not store"),
    ({"module": torch.nn.Linear(2, 2)}, "state['module']", "torch.nn.modules.linear.Linear"),
])
def test_things_that_are_neither_tensors_nor_json_scalars_are_refused(value: Any, where: str, what: str,
                                                                       tmp_path: Path, key_store: LocalKeyStore,
                                                                       key_id: str) -> None:
    with pytest.raises(UsageError) as caught:
        save(value, tmp_path / "ckpt", kms=key_store, key_id=key_id)
    assert str(caught.value).startswith(f"{where}: ") and what in str(caught.value), str(caught.value)
    assert "pickled" in str(caught.value) or "dense" in what or "store" in what or "keys" in what
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keys"]


def test_a_state_that_is_not_a_mapping_or_nests_too_deep_is_refused(tmp_path: Path, key_store: LocalKeyStore,
                                                                   key_id: str) -> None:
    with pytest.raises(UsageError, match="holds a mapping"):
        save([torch.zeros(1)], tmp_path / "ckpt", kms=key_store, key_id=key_id)  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="a value JSON cannot carry"):
        save({"huge": 10**5000}, tmp_path / "ckpt", kms=key_store, key_id=key_id)
    deep: Any = 1
    for _ in range(MAX_DEPTH - 1):  # and the state itself: MAX_DEPTH containers
        deep = [deep]
    save({"deep": deep}, tmp_path / "ok", kms=key_store, key_id=key_id)  # the limit itself is fine
    assert_same(load(tmp_path / "ok", kms=key_store), {"deep": deep})
    where = r"state\['deep'\](\[0\]){5}…(\[0\]){5}"  # the middle of a long path elided
    with pytest.raises(UsageError, match=rf"{where}: nested deeper than {MAX_DEPTH}"):
        save({"deep": [deep]}, tmp_path / "ckpt", kms=key_store, key_id=key_id)


# -- what is refused when loading ------------------------------------------------------------------


@pytest.fixture
def checkpoint(tmp_path: Path, key_store: LocalKeyStore, key_id: str) -> Path:
    model, optimizer = trained(torch.optim.Adam, lr=0.01)
    path = tmp_path / "ckpt"
    # Small segments: a tensor part that spans several segments.
    save({"model": model.state_dict(), "optimizer": optimizer.state_dict()}, path, kms=key_store, key_id=key_id,
         segment_size=4096)
    return path


def test_every_flipped_byte_and_truncation_is_invalid_ciphertext(checkpoint: Path, key_store: LocalKeyStore) -> None:
    data = checkpoint.read_bytes()
    positions = sorted({5, 30, 100, len(data) // 3, len(data) // 2, len(data) - 20, len(data) - 1})
    for position in positions:
        altered = bytearray(data)
        altered[position] ^= 0x01
        checkpoint.write_bytes(bytes(altered))
        with pytest.raises(InvalidCiphertext):
            load(checkpoint, kms=key_store)
    for length in (len(data) - 1, len(data) - 4096, len(data) // 2, 200, 10):
        checkpoint.write_bytes(data[:length])
        with pytest.raises(InvalidCiphertext):
            load(checkpoint, kms=key_store)
    checkpoint.write_bytes(data + b"\0")
    with pytest.raises(InvalidCiphertext):
        load(checkpoint, kms=key_store)


@given(bit=st.integers(min_value=0))
def test_any_flipped_bit_is_invalid_ciphertext(bit: int, tmp_path_factory: pytest.TempPathFactory) -> None:
    directory = tmp_path_factory.mktemp("flip")
    store = LocalKeyStore(directory / "keys")
    path = directory / "ckpt"
    save({"w": torch.arange(300.0), "step": 4}, path, kms=store, key_id=store.create_primary_key().key_id,
         segment_size=4096)
    data = bytearray(path.read_bytes())
    data[bit // 8 % len(data)] ^= 1 << (bit % 8)
    path.write_bytes(bytes(data))
    with pytest.raises(InvalidCiphertext):
        load(path, kms=store)


def test_the_wrong_key_is_invalid_ciphertext(checkpoint: Path, tmp_path: Path) -> None:
    other = LocalKeyStore(tmp_path / "other-keys")
    other.create_primary_key()
    with pytest.raises(InvalidCiphertext):
        load(checkpoint, kms=other)


def test_a_plaintext_torch_file_is_not_an_envelope(tmp_path: Path, key_store: LocalKeyStore) -> None:
    plain = tmp_path / "model.pt"
    torch.save({"w": torch.zeros(3)}, plain)
    with pytest.raises(NotAnEnvelope):
        load(plain, kms=key_store)
    with pytest.raises(InputNotFound):
        load(tmp_path / "missing", kms=key_store)


def test_an_envelope_made_for_something_else_is_refused(tmp_path: Path, key_store: LocalKeyStore,
                                                        key_id: str) -> None:
    """The associated data binds a checkpoint to its purpose: another ppml file, even one whose
    plaintext is a valid checkpoint, is refused before its key is asked for."""
    plain = tmp_path / "plain"
    save({"w": torch.zeros(3)}, tmp_path / "real", kms=key_store, key_id=key_id)
    from ppml.core.envelope import decrypt_file

    decrypt_file(tmp_path / "real", plain, kms=key_store)
    encrypt_file(plain, tmp_path / "other.ppml", kms=key_store, key_id=key_id)

    class Refusing(LocalKeyStore):
        def unwrap_data_key(self, *args: Any, **kwargs: Any) -> Any:
            raise AssertionError("the key was asked for")

    with pytest.raises(InvalidCiphertext):
        load(tmp_path / "other.ppml", kms=Refusing(key_store.directory))


def test_load_never_unpickles(checkpoint: Path, key_store: LocalKeyStore, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("unpickling was attempted")

    for module, name in ((torch, "load"), (pickle, "loads"), (pickle, "load"), (pickle, "Unpickler"),
                         (torch.serialization, "load")):
        monkeypatch.setattr(module, name, refuse)
    loaded = load(checkpoint, kms=key_store)
    assert set(loaded) == {"model", "optimizer"}


# -- atomic writes -------------------------------------------------------------------------------


def test_an_existing_checkpoint_is_kept_unless_overwrite(checkpoint: Path, key_store: LocalKeyStore,
                                                         key_id: str) -> None:
    before = checkpoint.read_bytes()
    with pytest.raises(OutputExists):
        save({"w": torch.zeros(1)}, checkpoint, kms=key_store, key_id=key_id)
    assert checkpoint.read_bytes() == before
    save({"w": torch.ones(1)}, checkpoint, kms=key_store, key_id=key_id, overwrite=True)
    assert torch.equal(load(checkpoint, kms=key_store)["w"], torch.ones(1))


def test_a_failed_overwrite_leaves_the_old_checkpoint_and_no_temporary_file(checkpoint: Path,
                                                                            key_store: LocalKeyStore, key_id: str,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    before = checkpoint.read_bytes()
    import ppml.torch.checkpoint as module

    calls = 0
    real = module._Concatenation.readinto

    def failing(self: Any, buffer: Any) -> int:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise OSError(28, "No space left on device")
        return real(self, buffer)

    monkeypatch.setattr(module._Concatenation, "readinto", failing)
    with pytest.raises(OSError, match="No space"):
        save({"w": torch.zeros(100_000)}, checkpoint, kms=key_store, key_id=key_id, overwrite=True,
             segment_size=4096)
    assert checkpoint.read_bytes() == before
    assert sorted(p.name for p in checkpoint.parent.iterdir()) == sorted(["ckpt", "keys"])


KILLED_SAVE = textwrap.dedent("""
    import os, signal, sys, torch
    import ppml.torch.checkpoint as module
    from ppml.kms.local import LocalKeyStore

    calls = 0
    real = module._Concatenation.readinto

    def killed(self, buffer):
        global calls
        calls += 1
        if calls == 20:
            os.kill(os.getpid(), signal.SIGKILL)
        return real(self, buffer)

    module._Concatenation.readinto = killed
    store = LocalKeyStore(sys.argv[2])
    module.save({"w": torch.zeros(1_000_000)}, sys.argv[1], kms=store, key_id=sys.argv[3], overwrite=True,
                segment_size=4096)
""")


@pytest.mark.parametrize("existing", [False, True])
def test_a_killed_save_leaves_nothing_at_the_path(existing: bool, tmp_path: Path, key_store: LocalKeyStore,
                                                  key_id: str) -> None:
    path = tmp_path / "ckpt"
    if existing:
        save({"w": torch.ones(3)}, path, kms=key_store, key_id=key_id)
    result = subprocess.run([sys.executable, "-c", KILLED_SAVE, str(path), str(key_store.directory), key_id],
                            capture_output=True, text=True, check=False, timeout=120)
    assert result.returncode == -signal.SIGKILL, result.stderr
    if existing:
        assert torch.equal(load(path, kms=key_store)["w"], torch.ones(3))
    else:
        assert not path.exists()
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.endswith(".partial")]
    assert len(leftovers) == 1 and leftovers[0].startswith(".ckpt.")  # a temporary name, never loaded
    with pytest.raises(InvalidCiphertext):
        load(tmp_path / leftovers[0], kms=key_store)


# -- load_into -----------------------------------------------------------------------------------


def parameters(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: value.clone() for name, value in module.state_dict().items()}


def test_a_corrupt_checkpoint_never_half_loads_a_module(checkpoint: Path, key_store: LocalKeyStore) -> None:
    torch.manual_seed(5)
    module = Net()
    before = parameters(module)
    data = bytearray(checkpoint.read_bytes())
    data[-100] ^= 0x80  # in the last segment: every tensor before it decrypts fine
    checkpoint.write_bytes(bytes(data))
    with pytest.raises(InvalidCiphertext):
        load_into(module, checkpoint, kms=key_store, state_key="model")
    assert_same(parameters(module), before)


def test_a_checkpoint_that_does_not_fit_changes_nothing(tmp_path: Path, key_store: LocalKeyStore,
                                                        key_id: str) -> None:
    """torch's own load_state_dict copies every tensor that fits before it reports the misfit;
    load_into checks them all first."""
    wider = Net(out=5).state_dict()
    save(wider, tmp_path / "wider", kms=key_store, key_id=key_id)
    module = Net(out=3)
    before = parameters(module)
    with pytest.raises(UsageError, match=r"layers\.3\.weight has shape \[5, 8\], the module \[3, 8\]"):
        load_into(module, tmp_path / "wider", kms=key_store)
    assert_same(parameters(module), before)
    with pytest.raises(RuntimeError):
        module.load_state_dict(load(tmp_path / "wider", kms=key_store))  # what load_into spares the caller
    assert not torch.equal(module.layers[0].weight, before["layers.0.weight"])


def test_load_into_strict_names_and_state_key(tmp_path: Path, key_store: LocalKeyStore, key_id: str) -> None:
    source = Net()
    partial = {k: v for k, v in source.state_dict().items() if not k.startswith("layers.3")}
    save({"model": partial, "extra": {"layers.0.weight": "not a tensor"}}, tmp_path / "ckpt", kms=key_store,
         key_id=key_id)
    module = Net()
    with pytest.raises(UsageError, match=r"layers\.3\.weight is missing"):
        load_into(module, tmp_path / "ckpt", kms=key_store, state_key="model")
    result = load_into(module, tmp_path / "ckpt", kms=key_store, state_key="model", strict=False)
    assert result.missing_keys == ["layers.3.weight", "layers.3.bias"]
    assert torch.equal(module.layers[0].weight, source.layers[0].weight)
    with pytest.raises(UsageError, match="no state dict under 'weights'"):
        load_into(module, tmp_path / "ckpt", kms=key_store, state_key="weights")
    with pytest.raises(UsageError, match=r"layers\.0\.weight is a str, not a tensor"):
        load_into(module, tmp_path / "ckpt", kms=key_store, state_key="extra", strict=False)
    with pytest.raises(UsageError, match="nothing was loaded: 'model' is not in the module") as caught:
        load_into(module, tmp_path / "ckpt", kms=key_store)
    assert "holds mappings under 'model', 'extra': pick the module's state with state_key=" in str(caught.value.hint)


def test_nothing_of_the_state_is_on_disk_in_the_clear(tmp_path: Path, key_store: LocalKeyStore,
                                                      key_id: str) -> None:
    marker = "plantedmarker_layer_name"
    weights = torch.full((1000,), 1234.5678)
    save({marker: weights}, tmp_path / "ckpt", kms=key_store, key_id=key_id)
    data = (tmp_path / "ckpt").read_bytes()
    assert marker.encode() not in data and weights[:8].numpy().tobytes() not in data
    assert os.listdir(tmp_path) == ["keys", "ckpt"] or sorted(os.listdir(tmp_path)) == ["ckpt", "keys"]


# -- the frozen vector ---------------------------------------------------------------------------


def test_the_frozen_v1_checkpoint_decodes_forever(tmp_path: Path) -> None:
    """tests/vectors/torch-checkpoint: written once by format version 1, read by every later ppml."""
    import hashlib
    import json
    import shutil

    from make_checkpoint_vectors import HERE, NAME, frozen_state

    manifest = json.loads((HERE / "manifest.json").read_text())
    data = (HERE / NAME).read_bytes()
    assert hashlib.sha256(data).hexdigest() == manifest["sha256"] and len(data) == manifest["size"]
    keys = tmp_path / "keys"
    keys.mkdir(mode=0o700)
    shutil.copyfile(HERE / manifest["key_file"], keys / f"{manifest['key_id']}.key")
    (keys / f"{manifest['key_id']}.key").chmod(0o600)  # git keeps no modes; the store wants 0600
    loaded = load(HERE / NAME, kms=LocalKeyStore(keys))
    assert_same(loaded, frozen_state())
    assert loaded["model"]["encoder.weight"] is loaded["model"]["decoder.weight"]

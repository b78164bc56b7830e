"""The key agent: data keys for the TEE's own processes only, over a private Unix socket.

An agent over a real local key store (``--tee none`` style) is asked by real child processes;
a process that does not descend from the agent (double-forked away), one of another user, and
malformed requests are refused; the socket and its directory are private and gone at stop. The
attested path (``ppml tee run`` → agent → KMS with the session's token) is in test_tee_e2e.py.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from ppml.core.keys import SECRET_ACCESS
from ppml.errors import InvalidCiphertext, UsageError
from ppml.kms.local import LocalKeyStore
from ppml.tee.agent import AGENT_ENV, MAX_FRAME, AgentKms, KeyAgent, KeyAgentClient

CHILD = textwrap.dedent("""
    import base64, json, sys
    from ppml.core.keys import SECRET_ACCESS
    from ppml.tee.agent import AgentKms
    kms = AgentKms(sys.argv[1])
    generated = kms.generate_data_key(sys.argv[2], associated_data=b"ctx")
    again = kms.unwrap_data_key(sys.argv[2], generated.wrapped, associated_data=b"ctx")
    print(json.dumps({"key": generated.data_key.export(SECRET_ACCESS).hex(),
                      "again": again.export(SECRET_ACCESS).hex(),
                      "wrapped": base64.b64encode(generated.wrapped).decode()}))
""")


@pytest.fixture()
def store(tmp_path: Path) -> tuple[LocalKeyStore, str, str]:
    keys = LocalKeyStore(tmp_path / "keys")
    key_id = keys.create_primary_key().key_id
    return keys, f"local:{tmp_path / 'keys'}", key_id


@pytest.fixture()
def agent(store: tuple[LocalKeyStore, str, str]) -> Iterator[KeyAgent]:
    keys, _, _ = store
    with KeyAgent(lambda uri: keys, tee="none") as running:
        yield running


def child(agent: KeyAgent, code: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **agent.environment()}
    return subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True,
                          timeout=60, check=False)


def test_a_child_gets_data_keys_and_holds_no_credential(agent: KeyAgent, store: tuple[LocalKeyStore, str, str],
                                                        tmp_path: Path) -> None:
    keys, uri, key_id = store
    result = child(agent, CHILD, uri, key_id)
    assert result.returncode == 0, result.stderr
    reply = json.loads(result.stdout)
    assert reply["key"] == reply["again"] and len(reply["key"]) == 64
    # The key the child got is the one the store wraps: the agent answered through it.
    import base64

    unwrapped = keys.unwrap_data_key(key_id, base64.b64decode(reply["wrapped"]), associated_data=b"ctx")
    assert unwrapped.export(SECRET_ACCESS).hex() == reply["key"]
    # The environment names a path, nothing secret.
    assert agent.environment() == {AGENT_ENV: str(agent.path)}


def test_the_socket_and_its_directory_are_private_and_go_away(store: tuple[LocalKeyStore, str, str]) -> None:
    keys, _, _ = store
    running = KeyAgent(lambda uri: keys).start()
    path = running.path
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_ISSOCK(path.stat().st_mode)
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    running.stop()
    assert not path.exists() and not path.parent.exists()
    with pytest.raises(UsageError, match="cannot reach the key agent") as caught:
        KeyAgentClient(path)
    assert caught.value.hint and "ppml submit" in caught.value.hint


def test_a_process_that_does_not_descend_from_the_agent_is_refused(agent: KeyAgent, tmp_path: Path) -> None:
    # The child forks and exits at once: the grandchild is re-parented away from the agent's process.
    out = tmp_path / "orphan.json"
    code = textwrap.dedent(f"""
        import json, os, sys, time
        if os.fork():
            os._exit(0)
        time.sleep(0.3)  # let the parent exit: this process is now an orphan
        from ppml.tee.agent import KeyAgentClient
        try:
            reply = KeyAgentClient().request({{"op": "ping"}})
            result = {{"reply": reply}}
        except Exception as exc:
            result = {{"error": type(exc).__name__, "message": str(exc)}}
        open({str(out)!r}, "w").write(json.dumps(result))
    """)
    assert child(agent, code).returncode == 0
    for _ in range(100):
        if out.exists() and out.read_text():
            break
        import time

        time.sleep(0.05)
    result = json.loads(out.read_text())
    assert result.get("error") == "PermissionDenied", result
    assert agent.refused == 1
    # A descendant is served.
    assert child(agent, "from ppml.tee.agent import KeyAgentClient; "
                        "print(KeyAgentClient().request({'op': 'ping'})['tee'])").stdout.strip() == "none"


@pytest.mark.skipif(os.getuid() != 0, reason="dropping to another uid needs root (CI runs as root)")
def test_another_user_cannot_reach_the_socket(agent: KeyAgent) -> None:
    code = textwrap.dedent("""
        import os, socket, sys
        os.setgid(65534); os.setuid(65534)
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(sys.argv[1])
        except PermissionError:
            print("refused")
        else:
            print(s.makefile("rb").readline().decode())
    """)
    result = child(agent, code, str(agent.path))
    assert result.stdout.strip() == "refused" or '"PermissionDenied"' in result.stdout, result


def test_bad_requests_get_errors_and_the_agent_keeps_serving(agent: KeyAgent,
                                                             store: tuple[LocalKeyStore, str, str]) -> None:
    _, uri, key_id = store
    client = KeyAgentClient(agent.path)
    with pytest.raises(UsageError, match="unknown op"):
        client.request({"op": "export-everything"})
    with pytest.raises(UsageError, match="key_id"):
        client.request({"op": "unwrap", "kms": uri})
    with pytest.raises(UsageError, match="base64"):
        client.request({"op": "unwrap", "kms": uri, "key_id": key_id, "wrapped": "%%%"})
    with pytest.raises(InvalidCiphertext):
        AgentKms(uri, client=client).unwrap_data_key(key_id, b"\x01" * 60)
    assert client.request({"op": "ping"})["tee"] == "none"
    client.close()
    # Not JSON, and a line over the limit: answered with an error, then the connection ends.
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as raw:
        raw.connect(str(agent.path))
        raw.sendall(b"not json\n")
        assert json.loads(raw.makefile("rb").readline())["error"] == "UsageError"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as raw:
        raw.connect(str(agent.path))
        raw.sendall(b"x" * (MAX_FRAME + 10) + b"\n")
        reply = json.loads(raw.makefile("rb").readline())
        assert reply["error"] == "UsageError" and "longer" in reply["message"]
    assert KeyAgentClient(agent.path).request({"op": "ping"})["ok"] is True


def test_no_agent_says_how_to_get_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(AGENT_ENV, raising=False)
    with pytest.raises(UsageError, match=AGENT_ENV):
        KeyAgentClient()


def test_the_executor_launcher_runs_its_command_under_an_agent_of_its_own(
        store: tuple[LocalKeyStore, str, str], tmp_path: Path) -> None:
    """``python -m ppml.tee.launcher CMD`` (the executors' bin/java on a standalone cluster): with no
    TEE backend in the environment (``--tee none``) CMD gets keys through an agent that uses the
    app's own credentials, and the agent is gone when CMD exits."""
    _, uri, key_id = store
    env = {k: v for k, v in os.environ.items() if not k.startswith("PPML_")}
    probe = CHILD + "import os; print(os.environ['PPML_KEY_AGENT'])\n"
    result = subprocess.run([sys.executable, "-m", "ppml.tee.launcher", sys.executable, "-c", probe, uri, key_id],
                            env=env, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    reply_line, socket_path = result.stdout.splitlines()
    reply = json.loads(reply_line)
    assert reply["key"] == reply["again"]
    assert not Path(socket_path).exists()


def test_the_executor_launcher_refuses_a_half_configured_tee_without_running_the_command(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("PPML_")}, "PPML_TEE_BACKEND": "simulated"}
    result = subprocess.run([sys.executable, "-m", "ppml.tee.launcher", "touch", str(marker)], env=env,
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode != 0
    assert "PPML_AS_URL" in result.stderr
    assert not marker.exists()


def test_ppml_tee_launch_runs_spark_s_entrypoint_with_an_agent_and_the_jvm_library(tmp_path: Path) -> None:
    """A Spark pod's command (``ppml tee launch -- /opt/entrypoint.sh executor``): the agent's
    socket and ppml's jar on SPARK_EXTRA_CLASSPATH reach the command, which Spark's entrypoint
    appends to the executor's class path."""
    from ppml.spark.jvm import library_jar

    env = {k: v for k, v in os.environ.items() if not k.startswith("PPML_")}
    env["SPARK_EXTRA_CLASSPATH"] = "/opt/extra.jar"
    probe = "import os, sys; print(os.environ['SPARK_EXTRA_CLASSPATH']); print(os.environ['PPML_KEY_AGENT']); " \
            "print(sys.argv[1])"
    result = subprocess.run([sys.executable, "-m", "ppml.cli.main", "tee", "launch", "--", sys.executable, "-c",
                             probe, "executor"], env=env, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    classpath, agent, argument = result.stdout.splitlines()
    assert classpath == f"/opt/extra.jar{os.pathsep}{library_jar()}"
    assert agent.endswith("agent.sock") and argument == "executor"

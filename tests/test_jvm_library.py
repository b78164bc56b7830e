"""ppml's JVM library: built with javac from the repository's sources, and its key agent client
talking to the real agent (a JVM child of the agent's process gets keys; errors name the cause)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from ppml.errors import UsageError
from ppml.kms.local import LocalKeyStore
from ppml.spark import jvm
from ppml.spark.launch import spark_home
from ppml.tee.agent import AGENT_ENV, KeyAgent


def java_classpath() -> str:
    return os.pathsep.join([str(jvm.library_jar()), str(spark_home() / "jars" / "*")])


def run_java(main: str, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["java", "-cp", java_classpath(), main, *args], env=env, capture_output=True,
                          text=True, timeout=120, check=False)


@pytest.fixture()
def store(tmp_path: Path) -> tuple[LocalKeyStore, str, str]:
    keys = LocalKeyStore(tmp_path / "keys")
    return keys, f"local:{tmp_path / 'keys'}", keys.create_primary_key().key_id


@pytest.fixture()
def agent(store: tuple[LocalKeyStore, str, str]) -> Iterator[KeyAgent]:
    keys = store[0]
    with KeyAgent(lambda uri: keys, tee="none") as running:
        yield running


def test_the_library_is_built_from_the_sources_and_rebuilt_only_when_they_change() -> None:
    jar = jvm.library_jar()
    assert jar.is_file() and jar.name == jvm.JAR_NAME
    built = jar.stat().st_mtime_ns
    assert jvm.library_jar().stat().st_mtime_ns == built  # unchanged sources: no rebuild
    import zipfile

    names = zipfile.ZipFile(jar).namelist()
    assert "org/ppml/agent/KeyAgentClient.class" in names


def test_building_without_a_jdk_says_what_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("JAVA_HOME", str(tmp_path))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(UsageError, match="javac"):
        jvm.javac()


def test_a_jvm_child_of_the_agent_gets_keys_through_it(agent: KeyAgent, store: tuple[LocalKeyStore, str, str]) -> None:
    _, uri, key_id = store
    env = {**os.environ, **agent.environment()}
    result = run_java("org.ppml.agent.AgentCli", "ping", env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "tee: none"
    result = run_java("org.ppml.agent.AgentCli", "generate", uri, key_id, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("unwrap matches: true")


def test_the_jvm_client_reports_the_agents_refusal_and_a_missing_agent(
        agent: KeyAgent, store: tuple[LocalKeyStore, str, str]) -> None:
    _, uri, _ = store
    env = {**os.environ, **agent.environment()}
    result = run_java("org.ppml.agent.AgentCli", "unwrap", uri, "no-such-key", "00" * 40, env=env)
    assert result.returncode == 1
    assert "KeyNotFound" in result.stderr or "InvalidCiphertext" in result.stderr, result.stderr
    env.pop(AGENT_ENV)
    result = run_java("org.ppml.agent.AgentCli", "ping", env=env)
    assert result.returncode == 1
    assert "no key agent" in result.stderr and "ppml submit" in result.stderr

"""No secret in `ps`, in the Spark event log or on the UI's environment page of a submitted job."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ppml.spark.session import write_secret_file

APP = """
import json, sys, time, urllib.request
from pyspark.sql import SparkSession
spark = SparkSession.builder.getOrCreate()
spark.range(100).selectExpr("sum(id)").collect()
sc = spark.sparkContext
url = f"{sc.uiWebUrl}/api/v1/applications/{sc.applicationId}/environment"
environment = json.load(urllib.request.urlopen(url, timeout=30))
print("ENVIRONMENT " + json.dumps(environment))
sys.stdout.flush()
time.sleep(6)  # the test reads `ps` meanwhile
spark.stop()
"""


@pytest.mark.slow
@pytest.mark.spark
def test_no_secret_in_ps_event_log_or_ui(tmp_path: Path) -> None:
    secret_file = tmp_path / "rpc-secret"
    rpc_secret = write_secret_file(secret_file)
    apikey = "apikey-value-" + os.urandom(12).hex()
    token = "token-value-" + os.urandom(12).hex()
    app = tmp_path / "app.py"
    app.write_text(APP)
    events = tmp_path / "events"
    # The harness reads the (fake) secrets from a 0600 file: our own argv must not carry them either.
    params = tmp_path / "params.json"
    params.write_text(json.dumps({"app": str(app), "secret_file": str(secret_file), "events": str(events),
                                  "apikey": apikey, "token": token}))
    params.chmod(0o600)
    code = (
        "import json, sys; from pathlib import Path; from ppml.spark.submit import SubmitOptions, submit; "
        "p = json.loads(Path(sys.argv[1]).read_text()); "
        "sys.exit(submit(SubmitOptions(app=p['app'], master='local[2]', secret_file=Path(p['secret_file']), "
        "event_log_dir=Path(p['events']), conf=(('spark.ui.enabled', 'true'), ('spark.ui.port', '0'), "
        "('spark.eventLog.compress', 'false'), "
        "('spark.ppml.kms.apikey', p['apikey']), ('spark.ppml.attestation.token', p['token'])))))"
    )
    log = tmp_path / "submit.log"
    with open(log, "w") as sink:
        process = subprocess.Popen([sys.executable, "-c", code, str(params)], stdout=sink, stderr=subprocess.STDOUT,
                                   text=True, env={**os.environ, "SPARK_LOCAL_IP": "127.0.0.1"})
        ps_snapshots = []
        deadline = time.monotonic() + 180
        while process.poll() is None and time.monotonic() < deadline:
            # -ww: full command lines, however long
            ps_snapshots.append(subprocess.run(["ps", "-ww", "-eo", "args"], capture_output=True, text=True).stdout)
            time.sleep(0.5)
        process.wait(timeout=60)
    output = log.read_text(errors="replace")
    assert process.returncode == 0, output[-3000:]
    secrets = [rpc_secret, apikey, token]

    # ps: the submitted processes (spark-submit's JVM, the Python driver) were running and seen
    assert any("spark-submit" in snap or "SparkSubmit" in snap for snap in ps_snapshots)
    for snap in ps_snapshots:
        for secret in secrets:
            assert secret not in snap

    # UI environment page (its REST form)
    line = next(line for line in output.splitlines() if line.startswith("ENVIRONMENT "))
    environment = json.loads(line.removeprefix("ENVIRONMENT "))
    properties = dict(environment["sparkProperties"])
    assert properties["spark.authenticate.secret"] == "*********(redacted)"
    assert properties["spark.ppml.kms.apikey"] == "*********(redacted)"
    assert properties["spark.ppml.attestation.token"] == "*********(redacted)"
    for secret in secrets:
        assert secret not in line

    # the event log (written uncompressed here so its text can be searched; compression changes no content)
    logs = [p for p in events.rglob("*") if p.is_file()]
    assert logs, "no event log was written"
    text = "".join(p.read_text(errors="replace") for p in logs)
    assert "SparkListenerEnvironmentUpdate" in text
    for secret in secrets:
        assert secret not in text
    # and the driver's own output
    for secret in secrets:
        assert secret not in output

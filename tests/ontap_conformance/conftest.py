"""NetApp's own Python client (netapp-ontap, pinned per supported release by the caller) against
drover's ONTAP simulator emulating that release. Started here, one simulator per test module.

Environment: DROVER_BIN (the drover binary; default target/debug/drover).
The emulated release is the client's own: netapp-ontap 9.10.1.0 talks to a simulated 9.10.1.
"""

import os
import re
import subprocess
import tempfile
import time

import pytest
import netapp_ontap
from netapp_ontap import HostConnection, config

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
RELEASE = ".".join(netapp_ontap.__version__.split(".")[:3])
CALLS = {"count": 0}


def topology(extra=""):
    text = open(os.path.join(ROOT, "examples", "lab", "ontap.yaml")).read()
    text = text.replace("version: 9.14.1", f"version: {RELEASE}")
    # A volume relationship as well, and jobs quick enough for a test.
    text = text.replace("      - { name: db_data, svm: svm_dr, type: dp }",
                        "      - { name: db_data, svm: svm_dr, type: dp }\n      - { name: logs, svm: svm_dr, type: dp }")
    text = text.replace("      - { name: db_data, svm: svm1, junction: /db_data }",
                        "      - { name: db_data, svm: svm1, junction: /db_data }\n      - { name: logs, svm: svm1 }")
    text = text.replace("job_delay: 100ms", "job_delay: 50ms").replace("transfer_time: 500ms", "transfer_time: 100ms")
    return text + extra


class Lab:
    """A running `drover lab ontap`: two clusters, east (primary) and west (DR)."""

    def __init__(self, extra=""):
        self.dir = tempfile.mkdtemp(prefix="pcl-")
        path = os.path.join(self.dir, "topology.yaml")
        with open(path, "w") as f:
            f.write(topology(extra))
        binary = os.environ.get("DROVER_BIN", os.path.join(ROOT, "target", "debug", "drover"))
        self.proc = subprocess.Popen([binary, "lab", "ontap", "--topology", path, "--dir", self.dir],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        sites = os.path.join(self.dir, "sites.yaml")
        deadline = time.time() + 30
        while not os.path.exists(sites):
            assert self.proc.poll() is None, self.proc.stdout.read()
            assert time.time() < deadline, "the simulator did not start"
            time.sleep(0.05)
        time.sleep(0.1)
        text = open(sites).read()
        self.sites = {}
        for name, url, cred, ca in re.findall(
                r"\n  (\w+):\n    ontap:\n      url: (\S+)\n      username: admin\n      credentials: file:(\S+)\n      ca_file: (\S+)", text):
            self.sites[name] = (url.split("://", 1)[1], open(cred).read().strip(), ca)
        assert set(self.sites) == {"east", "west"}, text
        os.environ["REQUESTS_CA_BUNDLE"] = self.sites["west"][2]

    def connection(self, site, password=None):
        host, real_password, _ = self.sites[site]
        name, port = host.rsplit(":", 1)
        conn = HostConnection(name, username="admin", password=password or real_password, verify=True,
                              poll_interval=1)
        # Older clients take no `port` argument; every release builds URLs from this attribute.
        conn.port = int(port)
        conn.session.hooks["response"].append(lambda r, *a, **k: CALLS.__setitem__("count", CALLS["count"] + 1))
        return conn

    def stop(self):
        self.proc.terminate()
        self.proc.wait(10)


@pytest.fixture
def lab():
    config.RAISE_API_ERRORS = True
    running = Lab()
    yield running
    running.stop()


@pytest.fixture
def lab_with_a_failing_job():
    """The next SVM state change's job fails, as ONTAP reports it."""
    running = Lab("faults:\n  - { cluster: east, method: PATCH, path: /api/svm/svms, "
                  "kind: { type: job_failure, code: 13434919, message: \"SVM stop failed: LIFs busy\" }, count: 1 }\n")
    yield running
    running.stop()


def pytest_terminal_summary(terminalreporter):
    terminalreporter.write_line(f"netapp-ontap {netapp_ontap.__version__} against the simulator emulating ONTAP "
                                f"{RELEASE}: {CALLS['count']} HTTP calls made by NetApp's client")

"""`orch exec` (issue 4, part 3) and logs/exec through ANY manager (issue 5), on a real
local cluster: two hosts, two managers. Commands run in real runc containers through the
agent's session; the CLI is pointed at one manager only where a test needs the call to go
to the manager that does NOT hold the node's session (the call is forwarded).
"""

from __future__ import annotations

import asyncio
import signal
import subprocess

import pytest
from tests_support import wait_until

pytestmark = pytest.mark.integration

CLUSTER_NODES = 2
CLUSTER_MANAGERS = 2
# The last test restarts an agent: that must not look like a lost node (whose tasks would
# be replaced) on a busy machine, as in test_agent_restart.py.
CLUSTER_LIVENESS_TTL = 10

SHELL = """
apiVersion: orch/v1
kind: Service
metadata: {name: shell}
spec:
  image: REGISTRY/busybox:latest
  command: [sh, -c, 'echo "hello from $ORCH_SLOT"; exec sleep 1000000']
  replicas: 2
  stop_grace_period: 100ms
"""

ONCE = """
apiVersion: orch/v1
kind: Service
metadata: {name: once}
spec:
  image: REGISTRY/busybox:latest
  command: [sh, -c, 'echo done']
  restart_policy: {condition: none}
"""

MIB = 1024 * 1024


@pytest.fixture(scope="module")
def services(orch, cluster, tmp_path_factory):
    """shell: two running replicas, one per node; once: a task that has completed."""
    folder = tmp_path_factory.mktemp("exec")
    for name, text in (("shell", SHELL), ("once", ONCE)):
        path = folder / f"{name}.yaml"
        path.write_text(text.replace("REGISTRY", cluster.record.registry))
        orch("apply", "-f", str(path))
    try:
        running = wait_until(lambda: len(r := orch.running("shell")) == 2 and r, 90)
        assert {t["node_hostname"] for t in running} == {"node1", "node2"}
        wait_until(lambda: [t["state"] for t in orch.tasks("once", all=True)] == ["complete"], 60)
        yield
    finally:
        orch("rm", "shell", check=False)
        orch("rm", "once", check=False)
        wait_until(
            lambda: not [t for t in orch.tasks(all=True) if t["service"] in ("shell", "once")], 30
        )


def session_holder(orch, hostname: str) -> str:
    """The address of the manager holding ``hostname``'s session."""
    node = wait_until(
        lambda: next(
            (n for n in orch.json("nodes") if n["hostname"] == hostname and n["status"] == "ready"),
            None,
        ),
        20,
        what=f"{hostname} ready",
    )
    addresses = {m["id"]: m["addr"] for m in orch.json("managers")}
    return addresses[node["manager"]]


def other_manager(orch, address: str) -> str:
    return next(a for a in orch.cluster.managers if a != address)


def task_on(orch, hostname: str) -> dict:
    return next(t for t in orch.running("shell") if t["node_hostname"] == hostname)


def test_exec_streams_stdout_stderr_and_returns_the_exit_code(orch, services) -> None:
    res = orch("exec", "shell", "--", "sh", "-c", "echo hi; echo err >&2; exit 3", check=False)
    assert (res.returncode, res.stdout, res.stderr) == (3, "hi\n", "err\n")


def test_exec_runs_as_the_container_with_extra_env(orch, services) -> None:
    slot2 = next(t for t in orch.running("shell") if t["slot"] == 2)
    res = orch(
        "exec", "-e", "GREETING=hey", "shell.2", "--", "sh", "-c", "echo $GREETING $ORCH_SLOT"
    )
    assert res.stdout == "hey 2\n"
    by_id = orch("exec", slot2["id"][:8], "--", "cat", "/proc/1/cmdline")
    assert "sleep" in by_id.stdout


def test_exec_of_a_missing_command_is_127(orch, services) -> None:
    res = orch("exec", "shell", "--", "no-such-command", check=False)
    assert res.returncode == 127


def test_exec_on_a_task_that_is_not_running_is_a_clear_error(orch, services) -> None:
    [task] = orch.tasks("once", all=True)
    for target in (task["id"], "once", "once.1"):
        res = orch("exec", target, "--", "true", check=False)
        assert res.returncode == 1, target
        lines = res.stderr.splitlines()
        assert len(lines) == 1, res.stderr
        if target == "once":
            assert lines[0] == "orch: service once has no running task"
        else:
            assert lines[0] == (
                f"orch: task {task['id'][:12]} (once.1) is not running (state: complete)"
            )
    res = orch("exec", "nosuch", "--", "true", check=False)
    assert (res.returncode, res.stderr) == (1, "orch: no such service or task: nosuch\n")


@pytest.mark.parametrize("hostname", ["node1", "node2"])
def test_exec_and_logs_through_the_manager_without_the_session(orch, services, hostname) -> None:
    holder = session_holder(orch, hostname)
    other = orch.at(other_manager(orch, holder))
    task = task_on(orch, hostname)
    target = f"shell.{task['slot']}"

    res = other("exec", target, "--", "sh", "-c", "echo out; echo err >&2; exit 7", check=False)
    assert (res.returncode, res.stdout, res.stderr) == (7, "out\n", "err\n")
    logs = other("logs", target).stdout
    assert f"{target}@{hostname} | hello from {task['slot']}" in logs
    # The refusal of a forwarded call keeps its kind and message.
    res = other("exec", target, "--", "no-such-command", check=False)
    assert res.returncode == 127


def test_a_mebibyte_of_output_arrives_complete(orch, services) -> None:
    # Through the manager without the session: two hops of back-pressure.
    holder = session_holder(orch, "node2")
    other = orch.at(other_manager(orch, holder))
    script = f"yes 0123456789abcdef0123456789abcde | head -c {MIB}; echo tail >&2"
    res = subprocess.run(
        [orch.binary, "exec", f"shell.{task_on(orch, 'node2')['slot']}", "--", "sh", "-c", script],
        capture_output=True,
        env=other.env,
        timeout=60,
    )
    assert res.returncode == 0, res.stderr
    assert len(res.stdout) == MIB
    line = b"0123456789abcdef0123456789abcde\n"
    assert res.stdout == (line * (MIB // len(line) + 1))[:MIB]
    assert res.stderr == b"tail\n"


def test_leaving_client_kills_the_command(orch, services) -> None:
    holder = session_holder(orch, "node1")
    other = orch.at(other_manager(orch, holder))
    slot = task_on(orch, "node1")["slot"]
    marker = f"sleep {4242 + slot}"  # a command line to find among the container's processes
    proc = subprocess.Popen(
        [orch.binary, "exec", f"shell.{slot}", "--", "sh", "-c", f"echo started; exec {marker}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=other.env,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"started\n"

        def processes() -> str:
            return orch("exec", f"shell.{slot}", "--", "ps").stdout

        assert marker in processes()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(10) == 130
        wait_until(lambda: marker not in processes(), 10, what="the command to be killed")
    finally:
        proc.kill()
        proc.wait()


def test_logs_of_a_service_merge_across_managers(orch, cluster, services) -> None:
    """Move node2's session to the other manager than node1's (kill manager 0: both
    agents go to manager 1; start it again and restart node2's agent, which tries manager 0
    first); then either manager serves logs and exec of both nodes."""
    m0, m1 = cluster.managers
    asyncio.run(cluster.kill_manager(0))
    try:
        wait_until(
            lambda: {session_holder(orch, h) for h in ("node1", "node2")} == {m1},
            30,
            what="both agents on manager 1",
        )
    finally:
        asyncio.run(cluster.start_manager(0))
    asyncio.run(cluster.kill_agent("node2", crash=True))
    asyncio.run(cluster.start_agent("node2"))
    wait_until(lambda: session_holder(orch, "node2") == m0, 30, what="node2 on manager 0")
    assert session_holder(orch, "node1") == m1

    tasks = {t["node_hostname"]: t for t in orch.running("shell")}
    assert set(tasks) == {"node1", "node2"}
    lines = [f"shell.{t['slot']}@{h} | hello from {t['slot']}" for h, t in tasks.items()]
    for address in (m0, m1):
        single = orch.at(address)
        logs = wait_until(
            lambda s=single: (o := s("logs", "shell").stdout) and all(x in o for x in lines) and o,
            20,
            what=f"the logs of both nodes through {address}",
        )
        assert logs
        for task in tasks.values():
            res = single("exec", f"shell.{task['slot']}", "--", "sh", "-c", "echo $ORCH_SLOT")
            assert res.stdout == f"{task['slot']}\n"

"""The real `orch` executable against a fake Control server: error translation, failover
and what listings print. Each run is a subprocess, as a user runs it."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import sys
from pathlib import Path

import pytest
import yaml
from tests_support import test_pki

from orch.cli.client import ControlClient, ManagerUnreachableError
from orch.cli.config import CliSettings
from orch.proto import control_pb2

ORCH = Path(sys.executable).parent / "orch"

# --- errors ------------------------------------------------------------------------------


async def test_unreachable_manager_is_one_line_and_exit_1(orch, dead_address) -> None:
    result = await orch("--manager", dead_address, "ls")
    assert result.returncode == 1
    assert result.stdout == b""
    assert result.stderr == f"orch: cannot reach a manager at {dead_address} (connection refused)\n"


async def test_unreachable_manager_from_env(orch, dead_address) -> None:
    result = await orch("ps", extra_env={"ORCH_MANAGER": dead_address})
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"orch: cannot reach a manager at {dead_address} (connection refused)"
    ]


async def test_no_manager_configured_says_where_it_looked(orch, tmp_path) -> None:
    result = await orch("ls")
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("orch: no manager address")
    assert str(tmp_path / "state" / "managers") in lines[0]


async def test_missing_admin_credentials_say_how_to_get_some(orch, fake_server, tmp_path) -> None:
    empty = tmp_path / "no-creds"
    result = await orch(
        "--manager", fake_server.address, "ls", extra_env={"ORCH_TLS_DIR": str(empty)}
    )
    assert result.returncode == 1
    [line] = result.stderr.splitlines()
    assert line.startswith(
        f"orch: no admin credentials in {empty} (ca.pem, admin.pem, admin-key.pem)"
    )
    assert "--tls-dir" in line and "orch-manager init" in line
    assert fake_server.control.requests == []


async def test_credentials_of_another_cluster_are_refused(orch, fake_server, tmp_path) -> None:
    from tests_support import TestPKI

    other = TestPKI().write_admin(tmp_path / "other-cluster")
    result = await orch("--manager", fake_server.address, "--tls-dir", str(other), "ls")
    assert result.returncode == 1
    [line] = result.stderr.splitlines()
    assert line == (
        f"orch: cannot reach a manager at {fake_server.address} (TLS: its certificate is not "
        "signed by the CA in the TLS dir: another cluster's manager, or another cluster's "
        "credentials)"
    )
    assert fake_server.control.requests == []


async def test_not_found_is_one_clear_line(orch, fake_server) -> None:
    result = await orch("--manager", fake_server.address, "inspect", "service", "nope")
    assert result.returncode == 1
    assert result.stderr == "orch: no such service: nope\n"
    assert "Traceback" not in result.stderr


async def test_invalid_argument_prints_each_problem(orch, fake_server) -> None:
    result = await orch("scale", "web=500", "api=200", "--manager", fake_server.address)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "orch: services (api): replicas: must be at most 100",
        "orch: services (web): replicas: must be at most 100",
    ]
    assert result.stdout == b""


async def test_deadline_is_reported_with_the_method(orch, fake_server) -> None:
    result = await orch(
        "--manager", fake_server.address, "--timeout", "0.5", "inspect", "node", "slow"
    )
    assert result.returncode == 1
    assert result.stderr == (
        f"orch: the manager at {fake_server.address} did not answer GetNode within 0.5s\n"
    )


async def test_bad_usage_is_exit_2_and_calls_nothing(orch, fake_server) -> None:
    result = await orch("--manager", fake_server.address, "scale", "web=-1")
    assert result.returncode == 2
    assert "expected SERVICE=REPLICAS" in result.stderr
    assert fake_server.control.requests == []


async def test_rm_reports_missing_services_and_removes_the_rest(orch, fake_server) -> None:
    result = await orch("--manager", fake_server.address, "rm", "ghost", "web")
    assert result.returncode == 1
    assert result.stderr == "orch: no such service: ghost\n"
    assert result.out == "service/web removed\n"
    assert "web" not in fake_server.control.services


# --- failover ----------------------------------------------------------------------------


async def test_fails_over_to_the_next_address(orch, fake_server, dead_address) -> None:
    result = await orch("--manager", f"{dead_address},{fake_server.address}", "ls", "-o", "json")
    assert result.returncode == 0, result.stderr
    assert [s["name"] for s in json.loads(result.stdout)] == ["web"]


async def test_silent_address_times_out_then_fails_over(fake_server) -> None:
    """A peer that accepts TCP but never speaks HTTP/2 is given connect_timeout, then the
    next address serves the call."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # the kernel completes handshakes; nobody ever reads
        silent_address = f"127.0.0.1:{silent.getsockname()[1]}"
        settings = CliSettings(timeout=5, connect_timeout=0.3)

        with ControlClient([silent_address], settings, tls=test_pki().client()) as client:
            with pytest.raises(ManagerUnreachableError) as info:
                await asyncio.to_thread(client.call, "ListNodes", control_pb2.ListNodesRequest())
        assert str(info.value) == (
            f"cannot reach a manager at {silent_address} (no connection within 0.3s)"
        )

        with ControlClient(
            [silent_address, fake_server.address], settings, tls=test_pki().client()
        ) as client:
            response = await asyncio.to_thread(
                client.call, "ListNodes", control_pb2.ListNodesRequest()
            )
            assert [n.description.hostname for n in response.nodes] == ["node1", "node2"]
            # The manager that answered is tried first next time.
            assert client.addresses == [fake_server.address, silent_address]


# --- what commands print -----------------------------------------------------------------


async def test_scale_sends_all_targets_in_one_call(orch, fake_server) -> None:
    result = await orch("--manager", fake_server.address, "scale", "web=5", "api=0")
    assert result.returncode == 0, result.stderr
    assert result.out == "web scaled to 5\napi scaled to 0\n"
    [(method, request)] = fake_server.control.requests
    assert method == "Scale"
    assert dict(request.replicas) == {"web": 5, "api": 0}


async def test_scale_beyond_the_bound_is_refused_before_any_call(orch, fake_server) -> None:
    result = await orch("--manager", fake_server.address, "scale", "web=18446744073709551615")
    assert result.returncode == 1
    assert result.stderr == (
        "orch: replicas.web: expected at most 10000 replicas, got 18446744073709551615\n"
    )
    assert fake_server.control.requests == []


async def test_a_label_the_manager_would_refuse_is_refused_before_any_call(
    orch, fake_server
) -> None:
    result = await orch("--manager", fake_server.address, "node", "label", "n1", "k=" + "v" * 1025)
    assert result.returncode == 1
    assert result.stderr == "orch: add_labels.k: 1025 characters, at most 1024 allowed\n"
    assert fake_server.control.requests == []


async def test_ls_table(orch, fake_server) -> None:
    result = await orch("ls", "--manager", fake_server.address)
    assert result.returncode == 0, result.stderr
    assert result.out.splitlines() == [
        "NAME   IMAGE                 REPLICAS   PORTS",
        "web    registry:5000/web:1   2/2",
    ]


async def test_ps_json_names_nodes_and_addresses(orch, fake_server) -> None:
    result = await orch("ps", "web", "-a", "-o", "json", "--manager", fake_server.address)
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [(r["slot"], r["node_hostname"], r["addresses"]) for r in rows] == [
        (1, "node1", ["10.0.1.5/24"]),
        (2, "node2", ["10.0.1.6/24"]),
    ]
    assert rows[0]["state"] == "running" and rows[0]["health"] == "healthy"
    list_tasks = [r for m, r in fake_server.control.requests if m == "ListTasks"]
    assert [(r.service, r.include_history) for r in list_tasks] == [("web", True)]


async def test_ps_table_has_short_ids_and_relative_state(orch, fake_server) -> None:
    result = await orch("ps", "--manager", fake_server.address)
    assert result.returncode == 0, result.stderr
    header, first, second = result.out.splitlines()
    assert header.split() == [
        "ID",
        "NAME",
        "NODE",
        "DESIRED",
        "STATE",
        "HEALTH",
        "ADDRESS",
        "PORTS",
        "REASON",
        "ERROR",
    ]
    assert first.split()[:5] == ["t1aaaaaaaaaa", "web.1", "node1", "running", "running"]
    assert first.endswith("ago   healthy   10.0.1.5/24")
    assert second.split()[1] == "web.2"


async def test_inspect_node_by_hostname_as_json(orch, fake_server) -> None:
    result = await orch("inspect", "node", "node2", "-o", "json", "--manager", fake_server.address)
    assert result.returncode == 0, result.stderr
    node = json.loads(result.stdout)
    assert node["id"] == "n2abc"
    assert node["description"]["resources"]["memory_bytes"] == 4 << 30  # a number, not "…"
    assert node["status"]["state"] == "NODE_READY"


async def test_logs_prefix_streams_and_raw_bytes(orch, fake_server) -> None:
    result = await orch("logs", "web", "--tail", "5", "--manager", fake_server.address)
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"web.1@node1 | hello from 1\nweb.2@node2 | bytes \xff\xfe\n"
    assert result.stderr == "web.2@node2 | warning from 2\n"
    [logs] = [r for m, r in fake_server.control.requests if m == "Logs"]
    assert (logs.target, logs.follow, logs.tail) == ("web", False, 5)


async def test_logs_without_prefix(orch, fake_server) -> None:
    result = await orch("logs", "web", "--no-prefix", "--manager", fake_server.address)
    assert result.stdout == b"hello from 1\nbytes \xff\xfe\n"
    assert [m for m, _ in fake_server.control.requests] == ["Logs"]
    [logs] = [r for m, r in fake_server.control.requests if m == "Logs"]
    assert logs.tail == -1


# --- apply -------------------------------------------------------------------------------

MANIFEST = """\
apiVersion: orch/v1
kind: Network
metadata: {name: front}
---
apiVersion: orch/v1
kind: Service
metadata: {name: web}
spec:
  image: registry:5000/web:1
  replicas: 5
  networks: [front]
---
apiVersion: orch/v1
kind: Service
metadata: {name: api}
spec:
  image: registry:5000/api:1
"""


@pytest.mark.parametrize("dry_run", [False, True])
async def test_apply_prints_one_line_per_change(orch, fake_server, tmp_path, dry_run) -> None:
    (tmp_path / "app.yaml").write_text(MANIFEST)
    args = ["apply", "-f", str(tmp_path), "--manager", fake_server.address]
    result = await orch(*args, *(["--dry-run"] if dry_run else []))
    assert result.returncode == 0, result.stderr
    suffix = " (dry run)" if dry_run else ""
    lines = result.out.splitlines()
    assert lines[0] == f"network/front created{suffix}"
    assert lines[1].startswith("service/web configured (") and "replicas" in lines[1]
    assert lines[1].endswith(f"){suffix}")
    assert lines[2] == f"service/api created{suffix}"
    # Without --dry-run, apply then asks whether web's image change started a rollout.
    [(_, request), *follow] = fake_server.control.requests
    assert [m for m, _ in follow] == ([] if dry_run else ["GetService"])
    assert request.dry_run is dry_run
    assert [s.name for s in request.services] == ["web", "api"]
    assert request.services[0].replicas == 5


async def test_apply_dry_run_prints_the_planned_tasks(orch, fake_server, tmp_path) -> None:
    (tmp_path / "app.yaml").write_text(MANIFEST)
    args = ["apply", "-f", str(tmp_path), "--manager", fake_server.address, "--dry-run"]
    result = await orch(*args)
    assert result.returncode == 0, result.stderr
    table = result.out.split("\n\n", 1)[1].splitlines()
    assert table[0].split() == ["SERVICE", "SLOT", "NODE", "ACTION", "REASON"]
    assert [row.split() for row in table[1:]] == [
        ["web", "1", "h1", "start"],
        ["api", "1", "h1", "start"],
        ["web", "2", "-", "pending", "no", "node"],
    ]


@pytest.mark.parametrize("fmt", ["json", "yaml"])
async def test_apply_dry_run_as_one_record(orch, fake_server, tmp_path, fmt) -> None:
    (tmp_path / "app.yaml").write_text(MANIFEST)
    args = ["apply", "-f", str(tmp_path), "--manager", fake_server.address, "--dry-run"]
    result = await orch(*args, "-o", fmt)
    assert result.returncode == 0, result.stderr
    record = json.loads(result.out) if fmt == "json" else yaml.safe_load(result.out)
    assert record["dry_run"] is True
    assert [(s["name"], s["action"]) for s in record["services"]] == [
        ("web", "updated"),
        ("api", "created"),
    ]
    assert "replicas" in record["services"][0]["changed"]
    assert record["networks"] == [{"name": "front", "action": "created", "changed": []}]
    assert [(t["service"], t["slot"], t["node"], t["action"]) for t in record["tasks"]] == [
        ("web", 1, "h1", "start"),
        ("api", 1, "h1", "start"),
        ("web", 2, "", "pending"),
    ]
    assert record["tasks"][2]["reason"] == "no node"


async def test_apply_as_json_does_not_follow_rollouts(orch, fake_server, tmp_path) -> None:
    (tmp_path / "app.yaml").write_text(MANIFEST)
    result = await orch(
        "apply", "-f", str(tmp_path), "--manager", fake_server.address, "-o", "json"
    )
    assert result.returncode == 0, result.stderr
    record = json.loads(result.out)
    assert record["dry_run"] is False and record["tasks"] == [] and record["note"] == ""
    assert [m for m, _ in fake_server.control.requests] == ["Apply"]


async def test_apply_manifest_problems_are_printed_and_nothing_is_sent(
    orch, fake_server, tmp_path
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(MANIFEST.replace("replicas: 5", "replicas: many"))
    result = await orch("apply", "-f", str(bad), "--manager", fake_server.address)
    assert result.returncode == 1
    [line] = result.stderr.splitlines()
    assert line.startswith(f"orch: {bad}:10: spec.replicas: ")
    assert fake_server.control.requests == []


async def test_dev_down_without_a_cluster(orch, tmp_path) -> None:
    result = await orch("dev", "down", "--state-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert result.out == f"no local cluster in {tmp_path}\n"


async def test_logs_follow_has_no_deadline_and_ctrl_c_ends_it_quietly(
    fake_server, orch_process
) -> None:
    proc = await orch_process(
        "logs", "web", "-f", "--timeout", "0.3", "--manager", fake_server.address
    )
    first = await asyncio.wait_for(proc.stdout.readline(), 10)
    assert first == b"web.1@node1 | hello from 1\n"
    # Well past the 0.3 s call deadline, the stream is still open.
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(proc.wait(), 1.0)
    proc.send_signal(signal.SIGINT)
    await asyncio.wait_for(proc.wait(), 10)
    assert proc.returncode == 130
    assert await proc.stderr.read() == b"web.2@node2 | warning from 2\n"


# --- networks ------------------------------------------------------------------------------


async def test_network_ls_table_and_json(orch, fake_server) -> None:
    result = await orch("network", "ls", "--manager", fake_server.address)
    assert result.returncode == 0, result.stderr
    assert result.out.splitlines() == [
        "NAME    DRIVER    SUBNET         VNI    SERVICES",
        "front   overlay   10.10.0.0/24   4096   web",
        "spare   overlay   10.10.1.0/24   4097",
    ]
    result = await orch("--manager", fake_server.address, "network", "ls", "-o", "json")
    rows = json.loads(result.stdout)
    assert [(r["name"], r["vni"], r["endpoints"]) for r in rows] == [
        ("front", 4096, 2),
        ("spare", 4097, 0),
    ]


async def test_network_inspect_yaml_and_missing(orch, fake_server) -> None:
    result = await orch("network", "inspect", "front", "--manager", fake_server.address)
    assert result.returncode == 0, result.stderr
    assert "vni: 4096" in result.out and "gateway: 10.10.0.1" in result.out
    assert "services:\n- web" in result.out
    result = await orch("network", "inspect", "nope", "--manager", fake_server.address)
    assert (result.returncode, result.stderr) == (1, "orch: no such network: nope\n")


async def test_network_rm_removes_free_ones_and_reports_the_rest(orch, fake_server) -> None:
    result = await orch("network", "rm", "front", "spare", "nope", "--manager", fake_server.address)
    assert result.returncode == 1
    assert result.out == "network/spare removed\n"
    assert result.stderr.splitlines() == [
        "orch: network front is in use by service web",
        "orch: no such network: nope",
    ]
    assert sorted(fake_server.control.networks) == ["front"]

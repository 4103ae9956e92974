"""ExecBroker: the manager's side of exec over agent sessions, driven the way the
dispatcher drives it (a session's send function, a PublishExec message stream)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from orch.errors import PermissionDeniedError
from orch.manager.streams.execbroker import ExecBroker, ExecSettings
from orch.manager.streams.sessionroutes import TargetError
from orch.proto import control_pb2, dispatcher_pb2, objects_pb2, types_pb2

TASK = objects_pb2.Task(
    id="task1abcdefgh", service_name="web", slot=2, node_id="node1",
    status=objects_pb2.TaskStatus(state=types_pb2.RUNNING),
)  # fmt: skip


class Agent:
    """What the agent's end looks like to the broker: the session's outbox and the
    PublishExec stream it opens."""

    def __init__(self, broker: ExecBroker) -> None:
        self.broker = broker
        self.sent: list[dispatcher_pb2.ExecCommand] = []
        self.command = asyncio.Event()
        self.stream: asyncio.Queue[dispatcher_pb2.PublishExecMessage | None] = asyncio.Queue()
        self.pulled = 0  # messages the broker has taken from the stream
        broker.attach("node1", self.send)

    def send(self, msg: dispatcher_pb2.ManagerMessage) -> None:
        self.sent.append(msg.exec)
        self.command.set()

    async def messages(self) -> AsyncIterator[dispatcher_pb2.PublishExecMessage]:
        while (msg := await self.stream.get()) is not None:
            self.pulled += 1
            yield msg

    def publish(self, exec_id: str, *, err: str = "", **output) -> None:
        self.stream.put_nowait(
            dispatcher_pb2.PublishExecMessage(
                exec_id=exec_id, node_id="node1", err=err, output=control_pb2.ExecOutput(**output)
            )
        )


async def started(agent: Agent, run: AsyncIterator) -> tuple[str, asyncio.Task, asyncio.Task]:
    """Start an exec; the agent answers with 'started'. Returns exec id, the reading task
    and the PublishExec handler task."""
    first = asyncio.ensure_future(anext(run))
    await agent.command.wait()
    exec_id = agent.sent[-1].id
    receiver = asyncio.create_task(agent.broker.receive(agent.messages(), "node1"))
    agent.publish(exec_id, task_id=TASK.id, node_id="node1")
    assert (await first).task_id == TASK.id
    return exec_id, first, receiver


async def test_output_and_exit_code_arrive_in_order_and_nothing_is_killed() -> None:
    agent = Agent(ExecBroker())
    run = agent.broker.run(TASK, ["sh", "-c", "x"], ["A=1"])
    exec_id, _, receiver = await started(agent, run)
    assert list(agent.sent[0].argv) == ["sh", "-c", "x"] and list(agent.sent[0].env) == ["A=1"]
    agent.publish(exec_id, stream="stdout", data=b"hi\n")
    agent.publish(exec_id, stream="stderr", data=b"err\n")
    agent.publish(exec_id, exited=True, exit_code=3)
    rest = [out async for out in run]
    assert [(o.stream, o.data) for o in rest[:2]] == [("stdout", b"hi\n"), ("stderr", b"err\n")]
    assert rest[2].exited and rest[2].exit_code == 3
    await asyncio.wait_for(receiver, 1)  # the handler returns: the agent's call ends
    assert [c.kill for c in agent.sent] == [False]


async def test_another_node_cannot_publish_the_output_of_this_nodes_exec() -> None:
    agent = Agent(ExecBroker())
    run = agent.broker.run(TASK, ["sh", "-c", "x"], [])
    exec_id, _, receiver = await started(agent, run)
    forged = dispatcher_pb2.PublishExecMessage(
        exec_id=exec_id, output=control_pb2.ExecOutput(stream="stdout", data=b"forged")
    )

    async def intruder() -> AsyncIterator[dispatcher_pb2.PublishExecMessage]:
        yield forged

    with pytest.raises(PermissionDeniedError, match=f"node node2 may not publish .*{exec_id}"):
        await agent.broker.receive(intruder(), "node2")
    # The exec goes on with its own node's output only.
    agent.publish(exec_id, stream="stdout", data=b"mine")
    agent.publish(exec_id, exited=True, exit_code=0)
    assert [o.data async for o in run if o.data] == [b"mine"]
    await asyncio.wait_for(receiver, 1)


async def test_a_caller_that_leaves_kills_the_command_and_ends_the_stream() -> None:
    agent = Agent(ExecBroker())
    run = agent.broker.run(TASK, ["sleep", "9"], [])
    exec_id, _, receiver = await started(agent, run)
    await run.aclose()
    assert agent.sent[-1].kill and agent.sent[-1].id == exec_id
    agent.publish(exec_id, stream="stdout", data=b"late")
    await asyncio.wait_for(receiver, 1)


async def test_the_agent_error_is_a_target_error_naming_the_task() -> None:
    agent = Agent(ExecBroker())
    run = agent.broker.run(TASK, ["x"], [])
    first = asyncio.ensure_future(anext(run))
    await agent.command.wait()
    receiver = asyncio.create_task(agent.broker.receive(agent.messages(), "node1"))
    agent.publish(agent.sent[0].id, err="container task1 is not running (state: stopped)")
    with pytest.raises(TargetError) as err:
        await first
    assert str(err.value) == (
        "exec in task task1abcdefg (web.2): container task1 is not running (state: stopped)"
    )
    await asyncio.wait_for(receiver, 1)


async def test_a_node_that_never_answers_times_out() -> None:
    agent = Agent(ExecBroker(ExecSettings(start_timeout=0.05)))
    with pytest.raises(TargetError, match=r"did not start the command within 0\.05s"):
        await anext(agent.broker.run(TASK, ["x"], []))


async def test_a_node_that_disconnects_ends_the_exec() -> None:
    agent = Agent(ExecBroker())
    run = agent.broker.run(TASK, ["x"], [])
    await started(agent, run)
    agent.broker.detach("node1", agent.send)
    with pytest.raises(TargetError, match="disconnected while the command ran"):
        await anext(run)
    assert not agent.broker.connected("node1")


async def test_a_stream_that_breaks_before_the_exit_ends_the_exec() -> None:
    agent = Agent(ExecBroker())
    run = agent.broker.run(TASK, ["x"], [])
    await started(agent, run)
    agent.stream.put_nowait(None)  # the agent's stream ends without an exit code
    with pytest.raises(TargetError, match="stream ended before the command exited"):
        await anext(run)


async def test_a_node_not_connected_here_is_refused() -> None:
    with pytest.raises(TargetError, match="not connected to this manager"):
        await anext(ExecBroker().run(TASK, ["x"], []))


async def test_output_nobody_reads_stops_being_taken_from_the_agent() -> None:
    agent = Agent(ExecBroker(ExecSettings(queue_size=2)))
    run = agent.broker.run(TASK, ["yes"], [])
    exec_id, _, receiver = await started(agent, run)
    for _ in range(10):
        agent.publish(exec_id, stream="stdout", data=b"y" * 100)
    for _ in range(100):  # give the handler every chance to run ahead
        await asyncio.sleep(0)
    # 'started' + two queued + one waiting for room: the rest stays with the agent (and
    # so, through gRPC flow control, in the command's pipe).
    assert agent.pulled == 4
    await run.aclose()
    await asyncio.wait_for(receiver, 1)

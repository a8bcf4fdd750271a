"""The public Subscriber contract, used as a custom transport would: only ``sqla_notify`` names."""

from __future__ import annotations

import asyncio
import gc
import json

import pytest

from sqla_notify import Entry, Frame, Hub, Notification, SqlaNotifyError, Subscriber, WouldBlock


def N(id: int = 1, collection: str = "forums") -> Notification:
    return Notification(collection, "insert", {"id": id})


def decoded(frames: list[Frame]) -> list[object]:
    """Notifications by their data's id, control messages by type, other strings as they are."""
    out: list[object] = []
    for frame in frames:
        if isinstance(frame, Entry):
            out.append((frame.notification.data or {})["id"])
        else:
            out.append(json.loads(frame)["type"] if frame.startswith("{") else frame)
    return out


def idle(queue_size: int = 3) -> Subscriber:
    """A subscriber whose transport took the welcome and came back for more."""
    sub = Hub(queue_size=queue_size).subscribe()
    assert decoded(sub.receive_nowait()) == ["welcome"]
    assert sub.receive_nowait() == []
    return sub


def test_send_nowait_raises_would_block_on_a_full_queue_and_queues_nothing() -> None:
    sub = idle(queue_size=2)
    sub.send_nowait("a")
    sub.send_nowait("b")
    with pytest.raises(WouldBlock, match="expected fewer than 2 frames waiting, got 2"):
        sub.send_nowait("c")
    assert issubclass(WouldBlock, SqlaNotifyError)
    assert sub.pending == 2 and sub.receive_nowait() == ["a", "b"]  # in order, "c" not among them
    sub.send_nowait("d")  # taken: room again
    assert sub.receive_nowait() == ["d"]


def test_a_hand_over_is_queued_whole_or_not_at_all() -> None:
    sub = idle(queue_size=3)
    sub.send_nowait("a")
    sub.send_batch_nowait(["b", "c", "d"])  # the bound is checked before a hand-over, not within
    assert sub.pending == 4
    with pytest.raises(WouldBlock, match="got 4 waiting and 1 offered"):
        sub.send_batch_nowait(["e"])
    assert sub.receive_nowait() == ["a", "b", "c", "d"]
    with pytest.raises(WouldBlock, match="a hand-over of at most 3, got 0 waiting and 4 offered"):
        sub.send_batch_nowait(["1", "2", "3", "4"])  # larger than the bound on its own
    assert sub.pending == 0
    sub.send_batch_nowait([])  # nothing to hand over
    assert sub.pending == 0


async def settle() -> None:
    """Let the hub's hand-off to the loop, then its dispatch, run."""
    for _ in range(3):
        await asyncio.sleep(0)


def test_the_welcome_and_a_replay_come_first_beyond_the_bound() -> None:
    async def scenario() -> tuple[list[object], str]:
        async with Hub(queue_size=2, replay=10) as hub:
            hub.publish([N(0)])
            await settle()
            start = hub.cursor
            hub.publish([N(i) for i in range(1, 5)])
            await settle()
            sub = hub.subscribe(last_id=start)  # four to replay: twice the bound
            sub.send_nowait("a")
            sub.send_nowait("b")  # the bound applies on top of them until they are taken
            with pytest.raises(WouldBlock):
                sub.send_nowait("c")
            got = decoded(sub.receive_nowait())
            with pytest.raises(RuntimeError, match="expected a new subscriber") as raised:
                sub.send_welcome(["again"])
            return got, str(raised.value)

    got, _ = asyncio.run(scenario())
    assert got == ["welcome", 1, 2, 3, 4, "a", "b"]


def test_stalled_means_taken_and_not_back_while_a_queue_piled_up() -> None:
    sub = idle(queue_size=2)
    sub.send_nowait("a")
    sub.send_nowait("b")
    assert not sub.stalled  # a burst before its writer ran: not the client's fault
    sub.receive_nowait()  # taken; the transport is sending them
    sub.send_nowait("c")
    assert not sub.stalled
    sub.send_nowait("d")
    assert sub.stalled and not sub.overflowed
    assert sub.replace_with("resync") == 2
    assert sub.overflowed and not sub.stalled  # told once
    assert sub.receive_nowait() == ["resync"]
    assert not sub.overflowed  # it read again


def test_replace_with_keeps_a_welcome_not_yet_taken() -> None:
    sub = Hub(queue_size=2).subscribe()
    sub.send_nowait("a")
    assert sub.replace_with("resync") == 1
    assert decoded(sub.receive_nowait()) == ["welcome", "resync"]
    sub.send_nowait("b")
    assert sub.replace_with("resync again") == 1  # taken once: nothing is kept
    assert sub.receive_nowait() == ["resync again"]


def test_close_drops_what_waits_wakes_the_transport_and_discards_later_frames() -> None:
    sub = idle()
    closed: list[int | None] = []
    sub.on_close = lambda: closed.append(sub.close_code)
    sub.send_nowait("a")
    assert sub.close(4000, "bye") == 1
    assert (sub.close_code, sub.close_reason, closed) == (4000, "bye", [4000])
    assert sub.close(1013) == 0 and sub.close_code == 4000 and closed == [4000]  # the first code stays
    sub.send_nowait("late")
    sub.send_batch_nowait(["late", "too"])
    assert sub.send_reply_nowait("late") and sub.replace_with("late") == 0
    assert sub.receive_nowait() == []

    async def pull() -> list[list[Frame]]:
        return [batch async for batch in sub.frames()]

    assert asyncio.run(pull()) == []  # a closed subscriber's stream ends at once


def test_frames_ends_after_what_was_taken_when_closed() -> None:
    async def scenario() -> list[list[object]]:
        async with Hub() as hub:
            sub = hub.subscribe()
            got: list[list[object]] = []

            async def transport() -> None:  # a pull transport (SSE)
                async for batch in sub.frames():
                    got.append(decoded(batch))

            task = asyncio.ensure_future(transport())
            while not got:
                await asyncio.sleep(0)
            hub.publish([N(1), N(2)])
            while len(got) < 2:
                await asyncio.sleep(0)
            hub.disconnect(sub, 4000)
            await asyncio.wait_for(task, 5)
            return got

    assert asyncio.run(scenario()) == [["welcome"], [1, 2]]


def test_a_push_writer_starts_on_demand_once_per_burst_and_for_the_close() -> None:
    """The WebSocket transport's shape: a task only while there is something to send."""

    async def scenario() -> tuple[list[list[object]], int, bool, bool]:
        sent: list[list[object]] = []
        starts = 0
        async with Hub() as hub:
            sub = hub.subscribe()

            async def write() -> None:
                while sub.close_code is None:
                    batch = sub.receive_nowait()
                    if not batch:
                        return  # drained: that ends the writer
                    await asyncio.sleep(0)  # the socket takes its time
                    sent.append(decoded(batch))
                sub.writer_done()  # closed: a real transport sends the close frame first

            def start() -> None:
                nonlocal starts
                starts += 1
                asyncio.ensure_future(write())

            sub.set_writer(start)  # the welcome waits: started at once
            assert starts == 1 and sub.writing
            while sub.writing:
                await asyncio.sleep(0)
            for i in range(3):  # a burst in one loop step: one writer run
                hub.publish([N(i)])
            await asyncio.sleep(0)
            assert sub.pending == 3 and starts == 1  # started at the end of the step, not per frame
            while sub.pending or sub.writing:
                await asyncio.sleep(0)
            assert starts == 2
            writing_before_close = sub.writing
        # Leaving the hub closes it (1001): its writer is started to send the close frame.
        for _ in range(3):
            await asyncio.sleep(0)
        return sent, starts, writing_before_close, sub.close_code == 1001

    sent, starts, writing, closed = asyncio.run(scenario())
    assert sent == [["welcome"], [0, 1, 2]]
    assert starts == 3 and not writing and closed


def test_replies_within_the_budget_and_a_newer_subscribed_replaces_the_waiting_one() -> None:
    sub = idle(queue_size=100)
    sub.reply_budget = 1_000
    assert sub.send_reply_nowait('{"type":"subscribed","collections":["a"]}', subscribed=True)
    assert sub.send_reply_nowait('{"type":"error","message":"x"}')
    assert sub.send_reply_nowait('{"type":"subscribed","collections":["b"]}', subscribed=True)
    assert [json.loads(f) for f in sub.receive_nowait() if isinstance(f, str)] == [
        {"type": "error", "message": "x"}, {"type": "subscribed", "collections": ["b"]},
    ]
    assert sub.send_reply_nowait("x" * 2_000)  # one reply always fits, however large
    assert not sub.send_reply_nowait("y")  # over the budget: nothing queued; close the client
    assert sub.pending == 1


def test_entry_is_a_read_only_record_with_its_frame_encoded_once() -> None:
    async def scenario() -> tuple[list[Frame], str]:
        async with Hub() as hub:
            sub = hub.subscribe()
            sub.receive_nowait()
            hub.publish([N(7)])
            await settle()
            return sub.receive_nowait(), hub.cursor

    (entry,), cursor = asyncio.run(scenario())
    assert isinstance(entry, Entry)
    assert entry.id == cursor and entry.notification == N(7)
    assert json.loads(entry.text) == {"id": cursor, "collection": "forums", "action": "insert", "data": {"id": 7}}
    assert entry.message == {"type": "websocket.send", "text": entry.text}
    with pytest.raises(AttributeError, match="Entry is read-only: cannot set 'text'"):
        entry.text = "other"
    with pytest.raises(AttributeError, match="read-only"):
        del entry.id
    assert repr(entry).startswith("Entry(seq=1, id=")
    # Not tracked by the collector (a burst keeps many alive at once), compared by identity.
    assert not gc.is_tracked(entry)
    same = Entry(entry.seq, entry.id, entry.notification, entry.text, entry.committed)
    assert same != entry and same.message == entry.message and len({same, entry}) == 2


def test_bound_must_be_a_positive_int() -> None:
    for bound in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match=r"Subscriber\(bound=...\) expected an int >= 1, got"):
            Subscriber(bound=bound)  # type: ignore[arg-type]


def test_a_start_that_cannot_write_is_not_called_again() -> None:
    sub = Hub().subscribe()  # the welcome waits
    starts: list[int] = []
    sub.set_writer(lambda: starts.append(sub.pending))  # its client went away: it just returns
    sub.send_nowait("a")
    sub.send_nowait("b")
    assert starts == [1] and sub.writing and sub.pending == 3
    sub.writer_done()  # a writer that stopped: the next frame starts one again
    sub.send_nowait("c")
    assert starts == [1, 4]


def test_a_frame_for_an_idle_client_goes_to_its_transport_at_once_and_queues_while_that_waits() -> None:
    """``set_writer(start, send)``: with nothing queued and no writer running, ``send_nowait``
    hands the frame to ``send`` (no queue, no writer start). While a send is still waiting
    (``send`` returned ``False``), frames queue behind it, in order, for the writer that
    finishes it; a closed subscriber sends nothing."""
    sub = idle(queue_size=3)
    direct: list[object] = []
    starts: list[int] = []
    finishes = True

    def send(frame: Frame) -> bool:
        direct.extend(decoded([frame]))
        return finishes

    sub.set_writer(lambda: starts.append(sub.pending), send)
    sub.send_nowait(Entry(1, "e-1", N(1), "{}"))
    sub.send_nowait(Entry(2, "e-2", N(2), "{}"))
    assert direct == [1, 2] and sub.pending == 0 and not sub.writing and sub.idle and starts == []

    finishes = False  # the client's socket buffer is full: the send waits
    sub.send_nowait(Entry(3, "e-3", N(3), "{}"))
    assert direct == [1, 2, 3] and sub.writing and not sub.idle
    for i in (4, 5, 6):  # queued behind it, for the writer that finishes it: bounded as usual
        sub.send_nowait(Entry(i, f"e-{i}", N(i), "{}"))
    assert direct == [1, 2, 3] and decoded(sub.receive_nowait()) == [4, 5, 6] and starts == []
    assert sub.stalled is False and sub.receive_nowait() == [] and not sub.writing  # the writer is done

    finishes = True
    sub.send_nowait(Entry(7, "e-7", N(7), "{}"))  # idle again: at once
    assert direct == [1, 2, 3, 7]
    sub.close(1001)
    sub.send_nowait(Entry(8, "e-8", N(8), "{}"))
    assert direct == [1, 2, 3, 7] and starts == [0]  # the close started the writer, with nothing to send


def test_frames_already_queued_keep_their_place_before_a_direct_send() -> None:
    """A frame waiting (a reply, a welcome not yet taken) means the next one queues behind
    it: ``send`` is used only when nothing waits."""
    sub = Hub(queue_size=5).subscribe()  # its welcome waits
    direct: list[Frame] = []

    def send(frame: Frame) -> bool:
        direct.append(frame)
        return True

    sub.set_writer(lambda: None, send)  # the welcome waits: started
    sub.send_nowait(Entry(1, "e-1", N(1), "{}"))
    assert direct == [] and decoded(sub.receive_nowait()) == ["welcome", 1]

"""python-socketio against the gateway with connection state recovery on.

Its event handlers are called with exactly the packet's arguments, so a
handler declared with one parameter cannot take the recovery offset that
every `event` frame carries as its last argument. Such a client opts out
with `"recover": false` in its CONNECT auth and gets the frames unchanged;
a handler that takes `*rest` sees the offset (the event's id).

Usage: recover_opt_out.py URL TOKEN_A TOKEN_B (run by tests/js/python_client.test.mjs).
"""

import sys
import threading

import socketio

URL, TOKEN_A, TOKEN_B = sys.argv[1:4]
TIMEOUT = 10


def client(auth):
    sio = socketio.Client(reconnection=False)
    sio.connect(URL, auth=auth, transports=["websocket"], wait_timeout=TIMEOUT)
    return sio


def call(sio, event, arg):
    return sio.call(event, arg, timeout=TIMEOUT)


# Opted out: a one-parameter handler, exactly as without recovery.
plain_got = []
plain_done = threading.Event()
plain = client({"token": TOKEN_A, "recover": False})


@plain.on("event")
def on_plain(ev):  # one parameter: an extra offset would raise TypeError
    plain_got.append(ev)
    plain_done.set()


# Default (recover on): a handler that takes the offset as well.
rec_got = []
rec_done = threading.Event()
rec = client({"token": TOKEN_B})


@rec.on("event")
def on_rec(ev, *rest):
    rec_got.append((ev, rest))
    rec_done.set()


for s in (plain, rec):
    assert call(s, "join", "py:room")["ok"], "join"
ack = call(plain, "publish", {"channel": "py:room", "event": "m", "data": {"n": 1}})
assert ack["ok"], ack
assert plain_done.wait(TIMEOUT), "the opted-out client got the event"
assert rec_done.wait(TIMEOUT), "the recovering client got the event"
assert plain_got[0]["data"] == {"n": 1} and plain_got[0]["id"] == ack["id"], plain_got
ev, rest = rec_got[0]
assert ev["id"] == ack["id"], rec_got
assert list(rest) == [ack["id"]], f"the offset is the event's id: {rest}"
plain.disconnect()
rec.disconnect()
print("ok")

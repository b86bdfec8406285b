#!/usr/bin/env python3
# The desktop simulator's listener hand-off (benchmark only). The fake Xvnc binds and listens on its RFB
# Unix socket itself, as Xvnc does, and sends that listening socket here (SCM_RIGHTS) on a connection it
# keeps open for as long as it lives. This broker passes each listener on to the simulator, its parent,
# over Node's IPC channel as a net.Server handle, so the simulator accepts the viewers' connections
# itself: no relaying process between sshd and the simulated desktop, as none sits between sshd and a
# real Xvnc. When the fake Xvnc's connection closes (it was killed), the simulator closes that listener.
#
# Node's IPC channel (NODE_CHANNEL_FD, JSON lines): a handle travels as
# {"cmd":"NODE_HANDLE","type":"net.Server","msg":...} with the descriptor attached, and the next one only
# after Node's NODE_HANDLE_ACK; plain messages are the JSON of the message itself.
import json
import os
import selectors
import socket
import sys

ipc = socket.socket(fileno=int(os.environ["NODE_CHANNEL_FD"]))
ipc.setblocking(False)
path = sys.argv[1]
server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
server.bind(path)
os.chmod(path, 0o777)
server.listen(4096)
server.setblocking(False)

sel = selectors.DefaultSelector()
sel.register(server, selectors.EVENT_READ, "accept")
sel.register(ipc, selectors.EVENT_READ, "ipc")

next_id = 1
ipc.setblocking(True)
ipc.sendall(b'{"type":"ready"}\n')
ipc.setblocking(False)
ids = {}  # fake Xvnc connection -> listener id (once its listener was received)
outbox = []  # (bytes, fd or None), sent in order
awaiting_ack = False
ipc_in = b""


def flush():
    global awaiting_ack
    while outbox and not awaiting_ack:
        data, fd = outbox.pop(0)
        ipc.setblocking(True)
        if fd is None:
            ipc.sendall(data)
        else:
            socket.send_fds(ipc, [data], [fd])
            os.close(fd)
            awaiting_ack = True
        ipc.setblocking(False)


def send(message, fd=None):
    outbox.append(((json.dumps(message) + "\n").encode(), fd))
    flush()


def closed(conn):
    sel.unregister(conn)
    listener = ids.pop(conn, None)
    conn.close()
    if listener is not None:
        send({"type": "closed", "id": listener})


while True:
    for key, _ in sel.select():
        if key.data == "accept":
            try:
                conn, _ = server.accept()
            except BlockingIOError:
                continue
            conn.setblocking(True)
            sel.register(conn, selectors.EVENT_READ, "xvnc")
        elif key.data == "ipc":
            chunk = ipc.recv(65536)
            if not chunk:
                sys.exit(0)  # the simulator is gone
            ipc_in += chunk
            *lines, ipc_in = ipc_in.split(b"\n")
            for line in lines:
                if b"NODE_HANDLE_ACK" in line or b"NODE_HANDLE_NACK" in line:
                    awaiting_ack = False
            flush()
        else:
            conn = key.fileobj
            try:
                data, fds, _, _ = socket.recv_fds(conn, 4096, 1)
            except OSError:
                data, fds = b"", []
            if not data and not fds:
                closed(conn)
                continue
            if not fds or conn in ids:
                for fd in fds:
                    os.close(fd)
                continue
            listener = next_id
            next_id += 1
            ids[conn] = listener
            send({"cmd": "NODE_HANDLE", "type": "net.Server", "msg": {"type": "listener", "id": listener}}, fds[0])
            conn.sendall(b"OK\n")

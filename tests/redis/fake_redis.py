"""A fake Redis for the Redis suite: a TCP proxy in front of a real Redis
whose replies can be garbled, cut or delayed, counting the connections the
hub makes (stdlib only)."""
import socket
import threading
import time

# ---------------------------------------------------------------------------
# A fake Redis: a proxy whose replies can be mangled
# ---------------------------------------------------------------------------

class FakeRedis:
    """Listens on 127.0.0.1:<free port> and forwards to `upstream` (a Redis)
    in mode "pass". Other modes, switchable at any time:
      garbage  nothing is forwarded; every read from the hub is answered
               with bytes that are not RESP (also sent at once to every open
               connection when the mode is set);
      cut      replies are forwarded until the first one, of which half (of
               the first reply in that read) is
               sent before both sides are closed;
      slow     replies are held `delay` seconds before they are sent;
      loading  every command is answered `-LOADING ...` (a Redis reading
               its data set after a restart; see `drop_all`).
    `connections` counts accepted connections."""

    GARBAGE = b"\x00\xff%%% not RESP at all \xfe\r\n?\r\n"
    LOADING = b"-LOADING Redis is loading the dataset in memory\r\n"

    def __init__(self, lab, upstream, delay=2.5):
        self.lab = lab
        self.upstream = upstream
        self.delay = delay
        self.mode = "pass"
        self.connections = 0
        self.loading_answers = 0
        self.accepted_at = []
        self.cut = 0
        self.lock = threading.Lock()
        self.open = []
        self.srv = socket.socket()
        self.srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.srv.bind(("127.0.0.1", 0))
        self.srv.listen(64)
        self.port = self.srv.getsockname()[1]
        self.url = f"redis://127.0.0.1:{self.port}"
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()
        lab.closers.append(self.close)

    def set_mode(self, mode):
        with self.lock:
            self.mode = mode
            conns = list(self.open)
        if mode == "garbage":
            for c, _u in conns:
                try:
                    c.sendall(self.GARBAGE)
                except OSError:
                    pass

    def _accept(self):
        while not self.closed:
            try:
                c, _ = self.srv.accept()
            except OSError:
                return
            with self.lock:
                self.connections += 1
                self.accepted_at.append(time.monotonic())
            try:
                u = self.upstream.client().sock
                u.settimeout(None)
            except OSError:
                c.close()
                continue
            c.settimeout(None)
            with self.lock:
                self.open.append((c, u))
            threading.Thread(target=self._up, args=(c, u), daemon=True).start()
            threading.Thread(target=self._down, args=(c, u), daemon=True).start()

    def _drop(self, c, u):
        for s in (c, u):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
        with self.lock:
            if (c, u) in self.open:
                self.open.remove((c, u))

    def _up(self, c, u):
        """hub -> redis, one complete command at a time"""
        pending = b""
        while True:
            try:
                b = c.recv(65536)
            except OSError:
                b = b""
            if not b:
                self._drop(c, u)
                return
            cmds, pending = split_commands(pending + b)
            for cmd in cmds:
                mode = self.mode
                try:
                    if mode == "garbage":
                        c.sendall(self.GARBAGE)
                    elif mode == "loading":
                        with self.lock:
                            self.loading_answers += 1
                        c.sendall(self.LOADING)
                    else:
                        u.sendall(cmd)
                except OSError:
                    self._drop(c, u)
                    return

    def drop_all(self):
        """Closes every open connection, as a restarting Redis does."""
        with self.lock:
            conns = list(self.open)
        for c, u in conns:
            self._drop(c, u)

    def _down(self, c, u):
        """redis -> hub"""
        while True:
            try:
                b = u.recv(65536)
            except OSError:
                b = b""
            if not b:
                self._drop(c, u)
                return
            mode = self.mode
            try:
                if mode == "garbage":
                    continue
                if mode == "cut":
                    # Half of the first reply: the chunk may hold more than
                    # one, and a complete first reply would be an answer.
                    first = reply_end(b, 0) or len(b)
                    c.sendall(b[:max(1, first // 2)])
                    with self.lock:
                        self.cut += 1
                    self._drop(c, u)
                    return
                if mode == "slow":
                    time.sleep(self.delay)
                c.sendall(b)
            except OSError:
                self._drop(c, u)
                return

    def close(self):
        self.closed = True
        try:
            self.srv.close()
        except OSError:
            pass
        with self.lock:
            conns = list(self.open)
        for c, u in conns:
            self._drop(c, u)


def split_commands(buf):
    """Complete commands at the start of `buf` (RESP arrays of bulk strings,
    or inline lines), and the incomplete rest."""
    cmds = []
    i = 0
    while i < len(buf):
        start = i
        j = buf.find(b"\r\n", i)
        if j < 0:
            break
        if buf[i:i + 1] != b"*":
            cmds.append(buf[i:j + 2])  # inline
            i = j + 2
            continue
        n = int(buf[i + 1:j])
        i = j + 2
        complete = True
        for _ in range(n):
            j = buf.find(b"\r\n", i)
            if j < 0:
                complete = False
                break
            ln = int(buf[i + 1:j])
            if len(buf) < j + 2 + ln + 2:
                complete = False
                break
            i = j + 2 + ln + 2
        if not complete:
            i = start
            break
        cmds.append(buf[start:i])
    return cmds, buf[i:]


def reply_end(buf, i):
    """Where the RESP2 reply starting at `buf[i]` ends; None if incomplete."""
    j = buf.find(b"\r\n", i)
    if j < 0:
        return None
    t = buf[i:i + 1]
    if t in (b"+", b"-", b":"):
        return j + 2
    n = int(buf[i + 1:j])
    if t == b"$":
        end = j + 2 + max(n, 0) + (2 if n >= 0 else 0)
        return end if len(buf) >= end else None
    if t == b"*":
        k = j + 2
        for _ in range(max(n, 0)):
            k = reply_end(buf, k)
            if k is None:
                return None
        return k
    return len(buf)  # not RESP: the whole read

#!/usr/bin/env python3
"""Redis-side cost of following N channels: one XREAD over every channel key (re-sent after
each event by a follower that blocks on all its keys) against the notification scheme the hub
uses (an XREAD over the notification and control streams plus a read of the one named key).

usage: benches/follow_cost.py /path/redis.sock N   (a private, empty redis-server; it adds N streams)
"""
import socket, time, subprocess, sys, os
# Redis-side cost of one follow read over N channel keys (XREAD over every
# key, what the design in DESIGN.md re-arms after each event) vs the
# notification scheme (XREAD BLOCK over 2 keys + a read of the named key).
def cmd(*a):
    out = b'*%d\r\n' % len(a)
    for x in a:
        x = x if isinstance(x, bytes) else str(x).encode()
        out += b'$%d\r\n%s\r\n' % (len(x), x)
    return out
def readreply(f):
    l = f.readline()
    t = l[:1]
    if t in b'+-:': return l
    if t == b'$':
        n = int(l[1:]); 
        if n < 0: return None
        d = f.read(n + 2); return d
    if t == b'*':
        n = int(l[1:])
        return [readreply(f) for _ in range(max(n,0))]
    raise Exception(l)
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); f = s.makefile('rb')
def call(*a):
    s.sendall(cmd(*a)); return readreply(f)
N = int(sys.argv[2])
pipe = b''.join(cmd('XADD', 'k:{c%d}:s' % i, '1-0', 'p', '0', 'd', 'x') for i in range(N))
s.sendall(pipe)
for i in range(N): readreply(f)
keys = ['k:{c%d}:s' % i for i in range(N)]
call('CONFIG', 'RESETSTAT')
R = 200
t0 = time.perf_counter()
for _ in range(R):
    call('XREAD', 'COUNT', 500, 'STREAMS', *keys, *(['1-0'] * N))
t1 = time.perf_counter()
st1 = call('INFO', 'commandstats'); call('CONFIG', 'RESETSTAT')
for _ in range(R):
    call('XREAD', 'COUNT', 1000, 'STREAMS', 'k:ctl', 'k:n', '0-0', '0-0')
    call('XREAD', 'COUNT', 500, 'STREAMS', keys[7], '1-0')
t2 = time.perf_counter()
stats = call('INFO', 'commandstats')
def us(st):
    for line in st.decode().splitlines():
        if line.startswith('cmdstat_xread:'):
            return int(line.split('usec=')[1].split(',')[0])
a, b = us(st1) / R, us(stats) / R
print(f"N={N}: XREAD over all {N} keys: Redis {a:.1f} us per call ({1e6*(t1-t0)/R:.0f} us round trip); notification scheme: Redis {b:.1f} us per event ({1e6*(t2-t1)/R:.0f} us round trip, 2 calls)")

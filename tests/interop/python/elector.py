"""One candidate of a leader election, as py-consul's users write it: a session with a TTL,
renewed at half of it, and `kv.put(acquire=...)` on the leader key, retried whenever a
blocking read of the key says it is free. Prints its view (`leader` or `follower`) on every
change, one JSON line each, flushed. Run by test_kv.py as
`python elector.py HOST PORT KEY NAME TTL`; it runs until killed."""

import json
import sys
import threading
import time

import consul

host, port, key, name, ttl = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5])
c = consul.Consul(host=host, port=port)
session = c.session.create(name=name, ttl=ttl, lock_delay=0, behavior="release")
print(json.dumps({"name": name, "session": session, "view": "follower"}), flush=True)


def renew():
    while True:
        c.session.renew(session)
        time.sleep(ttl / 2)


threading.Thread(target=renew, daemon=True).start()

view = "follower"
index = None
while True:
    index, entry = c.kv.get(key, index=index, wait="2s")
    holder = entry and entry.get("Session")
    if not holder and c.kv.put(key, name, acquire=session):
        index, entry = c.kv.get(key)
        holder = entry and entry.get("Session")
    now = "leader" if holder == session else "follower"
    if now != view:
        view = now
        print(json.dumps({"name": name, "session": session, "view": view}), flush=True)

#!/usr/bin/env python3
"""Drive switchyard's dev Consul with py-consul, a third-party Consul client.

Usage: consul_client.py HOST PORT

The dev Consul claims to speak Consul's HTTP API; a client written by other
people against real Consul is the fairest judge of that. This script
registers a service with a TTL check, blocks on its health until the check
passes, runs a KV check-and-set sequence (including a blocking read), takes
and releases a lock with sessions, and fails an external node's serfHealth.
It exits non-zero with a message on the first mismatch and prints
"py-consul compat: ok" on success. The Rust test that runs it then reads the
results back with switchyard's own client.
"""

import sys
import threading
import time

import consul

SERVICE = "py-compat"
SERVICE_ID = "py-compat-1"
CHECK_ID = "service:" + SERVICE_ID  # Consul's ID for a service's only check
KEY = "switchyard/compat/py"


def expect(cond, what):
    if not cond:
        print("py-consul compat: FAILED: " + what, file=sys.stderr)
        sys.exit(1)


def later(delay, fn):
    t = threading.Thread(target=lambda: (time.sleep(delay), fn()))
    t.start()
    return t


def main():
    host, port = sys.argv[1], int(sys.argv[2])
    c = consul.Consul(host=host, port=port)

    leader = c.status.leader()
    expect(isinstance(leader, str) and leader, "status.leader() = %r" % (leader,))

    # Registration with a TTL check: the check starts critical.
    c.agent.service.register(
        SERVICE,
        service_id=SERVICE_ID,
        address="127.0.0.1",
        port=9999,
        tags=["blue", "active"],
        meta={"version": "v1"},
        check=consul.Check.ttl("30s"),
    )
    services = c.agent.services()
    expect(SERVICE_ID in services, "agent.services() lacks %s: %r" % (SERVICE_ID, services))
    expect(services[SERVICE_ID]["Port"] == 9999, "registered port: %r" % (services[SERVICE_ID],))

    index, nodes = c.health.service(SERVICE, passing=True)
    expect(nodes == [], "a fresh TTL check must keep the instance out of ?passing: %r" % (nodes,))
    expect(int(index) >= 1, "health index %r" % (index,))
    _, all_nodes = c.health.service(SERVICE)
    expect(len(all_nodes) == 1, "unfiltered health lists the instance: %r" % (all_nodes,))
    statuses = {ch["CheckID"]: ch["Status"] for ch in all_nodes[0]["Checks"]}
    expect(statuses.get(CHECK_ID) == "critical", "initial check status: %r" % (statuses,))

    # Block on health; the TTL passes half a second later, from another thread.
    t = later(0.5, lambda: c.agent.check.ttl_pass(CHECK_ID, "ok from python"))
    start = time.monotonic()
    deadline = start + 10
    passing = []
    while not passing and time.monotonic() < deadline:
        # A blocking return is not proof of a change: loop on the content.
        index, passing = c.health.service(SERVICE, passing=True, index=index, wait="5s")
    elapsed = time.monotonic() - start
    t.join()
    expect(len(passing) == 1, "instance never became passing: %r" % (passing,))
    expect(elapsed >= 0.3, "the blocking query returned before the change (%.3fs)" % elapsed)
    svc = passing[0]["Service"]
    expect(svc["ID"] == SERVICE_ID, "service ID %r" % (svc["ID"],))
    expect(svc["Tags"] == ["blue", "active"], "tags %r" % (svc["Tags"],))
    expect(svc["Meta"].get("version") == "v1", "meta %r" % (svc["Meta"],))
    check = [ch for ch in passing[0]["Checks"] if ch["CheckID"] == CHECK_ID]
    expect(check and check[0]["Output"] == "ok from python", "TTL note: %r" % (check,))

    # KV check-and-set.
    expect(c.kv.put(KEY, "one", cas=0) is True, "cas=0 on a missing key must write")
    expect(c.kv.put(KEY, "dup", cas=0) is False, "cas=0 on an existing key must not write")
    kv_index, item = c.kv.get(KEY)
    expect(item is not None and item["Value"] == b"one", "value after cas=0: %r" % (item,))
    modify = item["ModifyIndex"]
    expect(int(kv_index) == modify, "single-key index %r != ModifyIndex %r" % (kv_index, modify))
    expect(c.kv.put(KEY, "two", cas=modify) is True, "cas with the current ModifyIndex must write")
    expect(c.kv.put(KEY, "stale", cas=modify) is False, "cas with a stale ModifyIndex must not write")
    kv_index, item = c.kv.get(KEY)
    expect(item["Value"] == b"two", "value after cas: %r" % (item,))

    # A blocking KV read wakes on the next write.
    t = later(0.3, lambda: c.kv.put(KEY, "three", cas=item["ModifyIndex"]))
    start = time.monotonic()
    _, woke = c.kv.get(KEY, index=kv_index, wait="5s")
    elapsed = time.monotonic() - start
    t.join()
    expect(woke is not None and woke["Value"] == b"three", "blocking get saw %r" % (woke,))
    expect(0.2 <= elapsed < 4.5, "blocking get took %.3fs" % elapsed)

    # A missing key is None (404), not an error.
    _, missing = c.kv.get(KEY + "/missing")
    expect(missing is None, "missing key: %r" % (missing,))

    # Sessions and locks: acquire, a second session is refused, release,
    # destroy (the default `release` behavior frees held keys).
    lock = KEY + "/lock"
    first = c.session.create(name="py-compat-a", lock_delay=0, ttl=10)
    second = c.session.create(name="py-compat-b", lock_delay=0)
    _, info = c.session.info(first)
    expect(info is not None and info["Name"] == "py-compat-a", "session info: %r" % (info,))
    expect(info["TTL"] == "10s" and info["Behavior"] == "release", "session shape: %r" % (info,))
    expect(c.kv.put(lock, "leader-a", acquire=first) is True, "acquire a free lock")
    expect(c.kv.put(lock, "leader-b", acquire=second) is False, "a held lock refuses another session")
    _, held = c.kv.get(lock)
    expect(held["Session"] == first and held["LockIndex"] == 1, "held lock: %r" % (held,))
    renewed = c.session.renew(first)
    expect(renewed is not None and renewed["ID"] == first, "renew: %r" % (renewed,))
    expect(c.kv.put(lock, "done", release=first) is True, "the holder releases")
    expect(c.kv.put(lock, "leader-b", acquire=second) is True, "a released lock is free")
    expect(c.session.destroy(second) is True, "destroy")
    _, freed = c.kv.get(lock)
    expect("Session" not in freed, "destroy released the key: %r" % (freed,))
    _, sessions = c.session.list()
    expect([s["ID"] for s in sessions] == [first], "session list: %r" % (sessions,))
    c.session.destroy(first)

    # An external node in the catalog: its failed serfHealth takes its
    # instance out of ?passing; node checks come first.
    def external(status):
        return c.catalog.register(
            "py-ext", "10.9.8.7",
            service={"Service": SERVICE, "ID": "py-ext-1", "Port": 7000},
            check={"CheckID": "serfHealth", "Name": "Serf Health Status", "Status": status},
        )
    expect(external("passing") is True, "catalog register")
    _, nodes = c.health.service(SERVICE, passing=True)
    by_node = {n["Node"]["Node"]: n for n in nodes}
    expect("py-ext" in by_node, "external instance passing: %r" % (list(by_node),))
    expect(by_node["py-ext"]["Checks"][0]["CheckID"] == "serfHealth", "node checks first")
    expect(external("critical") is True, "catalog re-register")
    _, nodes = c.health.service(SERVICE, passing=True)
    expect("py-ext" not in [n["Node"]["Node"] for n in nodes], "failed node left ?passing")
    expect(c.catalog.deregister("py-ext") is True, "catalog deregister")
    me = c.agent.self()
    expect(me["Config"]["Datacenter"] == "dc1" and me["Member"]["Name"], "agent self: %r" % (me["Config"],))

    print("py-consul compat: ok")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""keybridge-sync's dir sink (keysync semantics) against a fake mTLS keybridged."""
import hashlib
import json
import os
import stat
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_sync_e2e import Env, check  # noqa: E402


def main():
    e = Env()
    try:
        fake = e.start_fake()
        out = os.path.join(e.dir, "secrets")
        os.mkdir(out, 0o700)
        env = e.sync_env(KEYBRIDGE_SYNC_SINK_TARGET="dir:" + out, AWS_ACCESS_KEY_ID=None,
                         AWS_SECRET_ACCESS_KEY=None, KEYBRIDGE_SYNC_SINK_ENDPOINT=None)
        fake.put("plain", b"p1")
        fake.put("renamed", b"r1", {"filename": "app.conf", "mode": "0440"})
        fake.put("binary", bytes(range(256)))
        rc, s, err = e.run(env=env)
        check(rc == 0 and s["created"] == 3, (s, err))
        check(open(os.path.join(out, "plain"), "rb").read() == b"p1", "plain")
        check(stat.S_IMODE(os.stat(os.path.join(out, "plain")).st_mode) == 0o400, "default mode")
        check(stat.S_IMODE(os.stat(os.path.join(out, "app.conf")).st_mode) == 0o440, "mode")
        check(open(os.path.join(out, "binary"), "rb").read() == bytes(range(256)), "binary")
        st_path = os.path.join(out, ".keybridge-sync.state")
        check(stat.S_IMODE(os.stat(st_path).st_mode) == 0o600, "state mode")
        state = json.load(open(st_path))
        check(state["application"] == "payments", state)
        check(state["files"]["plain"]["sha256"] == hashlib.sha256(b"p1").hexdigest(), state)
        check(state["files"]["renamed"]["file"] == "app.conf", state)
        print("ok: files, modes, filename override, 0600 state file")

        fake.reset_calls()
        rc, s, err = e.run(env=env)
        check(rc == 0 and s["unchanged"] == 3 and fake.calls["batch"] == 0, (s, fake.calls))
        print("ok: restart does not refetch (state file)")

        # tampered, deleted and chmod'ed files are repaired
        os.chmod(os.path.join(out, "plain"), 0o600)
        with open(os.path.join(out, "plain"), "wb") as f:
            f.write(b"tampered")
        os.unlink(os.path.join(out, "binary"))
        os.chmod(os.path.join(out, "app.conf"), 0o444)
        rc, s, err = e.run(env=env)
        check(rc == 0 and s["updated"] == 3, (s, err))
        check(open(os.path.join(out, "plain"), "rb").read() == b"p1", "not repaired")
        check(open(os.path.join(out, "binary"), "rb").read() == bytes(range(256)), "not repaired")
        check(stat.S_IMODE(os.stat(os.path.join(out, "app.conf")).st_mode) == 0o440, "mode")
        print("ok: tampered, deleted and re-moded files repaired")

        # a symlink planted where a file goes is replaced, never followed
        victim = os.path.join(e.dir, "victim")
        with open(victim, "wb") as f:
            f.write(b"untouched")
        os.unlink(os.path.join(out, "plain"))
        os.symlink(victim, os.path.join(out, "plain"))
        rc, s, err = e.run(env=env)
        check(rc == 0 and s["updated"] == 1, (s, err))
        check(open(victim, "rb").read() == b"untouched", "followed a symlink")
        check(not os.path.islink(os.path.join(out, "plain")), "symlink kept")
        # the sink directory itself must not be a symlink
        link_dir = os.path.join(e.dir, "link")
        os.symlink(out, link_dir)
        rc, s, err = e.run(env=dict(env, KEYBRIDGE_SYNC_SINK_TARGET="dir:" + link_dir))
        check(rc != 0 and s["created"] == 0, s)
        print("ok: symlinks never followed (file and directory)")

        # bad metadata and collisions fail those secrets; the rest still apply
        fake.put("writable", b"w", {"mode": "0666"})
        fake.put("setuid", b"w", {"mode": "4400"})
        fake.put("slash", b"w", {"filename": "../escape"})
        fake.put("dot", b"w", {"filename": ".hidden"})
        fake.put("a", b"a", {"filename": "same"})
        fake.put("b", b"b", {"filename": "same"})
        fake.put("good", b"g")
        rc, s, err = e.run(env=env)
        check(rc != 0 and s["failed"] == 6 and s["created"] == 1, (s, err))
        for f in ("writable", "setuid", "same", "escape", ".hidden"):
            check(not os.path.exists(os.path.join(out, f)), f)
        check(not os.path.exists(os.path.join(e.dir, "escape")), "escaped")
        check(open(os.path.join(out, "good"), "rb").read() == b"g", "good")
        for n in ("writable", "setuid", "slash", "dot", "a", "b"):
            fake.remove(n)
        print("ok: group/world-writable, set-id, path separators, hidden names, collisions refused")

        # owner/group metadata: applied only as root and only from the allow-lists
        if os.geteuid() != 0:
            fake.put("owned", b"o", {"owner": "root", "group": "root"})
            rc, s, err = e.run(env=env)
            check(rc == 0 and os.stat(os.path.join(out, "owned")).st_uid == os.geteuid(), s)
        else:
            fake.put("owned", b"o", {"owner": "nobody", "group": "nogroup"})
            rc, s, err = e.run(env=env)
            check(rc != 0 and s["failed"] == 1 and not os.path.exists(os.path.join(out, "owned")), s)
            allow = dict(env, KEYBRIDGE_SYNC_SINK_OWNERS="nobody,daemon",
                         KEYBRIDGE_SYNC_SINK_GROUPS="nogroup")
            rc, s, err = e.run(env=allow)
            st = os.stat(os.path.join(out, "owned"))
            import pwd
            check(rc == 0 and st.st_uid == pwd.getpwnam("nobody").pw_uid, (s, err))
            print("ok: owner/group from the allow-list only (running as root)")
        fake.remove("owned")

        # deletes: guarded, then applied; a state file for another app is refused
        fake.remove("good")
        fake.remove("binary")
        rc, s, err = e.run(env=env)
        check(rc != 0 and s["deleted"] == 0 and os.path.exists(os.path.join(out, "good")), s)
        rc, s, err = e.run("sync", "--allow-mass-delete", env=env)
        check(rc == 0 and s["deleted"] == 3, s)  # good, binary, owned
        check(not os.path.exists(os.path.join(out, "good")), "not deleted")
        check(os.path.exists(os.path.join(out, "plain")), "deleted too much")
        fake.app = "billing"
        rc, s, err = e.run(env=env)
        check(rc != 0 and s["created"] == 0, s)
        fake.app = "payments"
        # a world-readable state file is refused (it holds SHA-256 of contents)
        os.chmod(st_path, 0o644)
        rc, s, err = e.run(env=env)
        check(rc == 3, (rc, s))
        os.chmod(st_path, 0o600)
        rc, s, err = e.run(env=env)
        check(rc == 0, s)
        print("ok: dir deletes guarded; foreign state and readable state refused")
    finally:
        e.close()
    print("PASS")


if __name__ == "__main__":
    main()

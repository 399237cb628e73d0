#!/usr/bin/env python3
"""deploy/terraform with the real Terraform CLI and the hashicorp/aws provider from the machine's
local filesystem mirror (no network): init, validate and fmt -check of every module and example,
then `terraform test` with mock_provider "aws":

- keybridge-sync: the function, role, schedule, logs, alarm and VPC arguments; the role policy
  equals `keybridge-sync iam-policy` (syncer_role) and function_policy_json its function_role;
  schedule_expression equals `keybridge-sync schedule APP` for 200+ generated names (interval 15)
  and for intervals 5 and 60; source_code_hash is the base64 of artifact_sha256; refused inputs.
- svid-store-role: trust (principals, external ID) and the tag-conditioned Secrets Manager policy.

Without terraform or the provider mirror the test prints SKIP and why. The mirror is looked up
in $KB_TF_PLUGIN_MIRROR, then the usual places (/opt/tf-plugins on this machine image,
/usr/share/terraform/plugins, ~/.terraform.d/plugins, ...)."""
import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile

SRC = os.environ.get("KB_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "../.."))
BUILD = os.environ.get("KB_BUILD_DIR", os.path.join(SRC, "build"))
SYNC = os.path.join(BUILD, "keybridge-sync")
TF_DIR = os.path.join(SRC, "deploy", "terraform")
PROVIDER = os.path.join("registry.terraform.io", "hashicorp", "aws")
MIRRORS = ["/opt/tf-plugins", "/usr/share/terraform/plugins", "/usr/local/share/terraform/plugins",
           os.path.expanduser("~/.terraform.d/plugins"),
           os.path.expanduser("~/.local/share/terraform/plugins")]


def find_mirror():
    cands = [os.environ["KB_TF_PLUGIN_MIRROR"]] if os.environ.get("KB_TF_PLUGIN_MIRROR") else MIRRORS
    for m in cands:
        if os.path.isdir(os.path.join(m, PROVIDER)):
            return m
    return None


def tf(env, cwd, *args, timeout=600):
    p = subprocess.run(["terraform"] + list(args), cwd=cwd, env=env, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=timeout)
    out = p.stdout.decode(errors="replace")
    if p.returncode != 0:
        print(out)
        raise SystemExit(f"FAIL: terraform {' '.join(args)} in {cwd} exited {p.returncode}")
    return out


def schedules(names, interval):
    out = []
    for i in range(0, len(names), 500):
        p = subprocess.run([SYNC, "schedule", *names[i:i + 500], "--interval", str(interval)],
                           stdout=subprocess.PIPE, check=True)
        out += p.stdout.decode().splitlines()
    assert len(out) == 2 * len(names), len(out)
    return {n: out[2 * i + 1] for i, n in enumerate(names)}


def main():
    tfbin = shutil.which("terraform")
    if tfbin is None:
        print("SKIP: terraform is not installed (not a Debian package; the CI image has it in "
              "/usr/local/bin)")
        return
    mirror = find_mirror()
    if mirror is None:
        print(f"SKIP: no local provider mirror with {PROVIDER} (looked in {', '.join(MIRRORS)}; "
              "set KB_TF_PLUGIN_MIRROR)")
        return
    if not os.access(SYNC, os.X_OK):
        raise SystemExit(f"FAIL: {SYNC} not built")
    with tempfile.TemporaryDirectory(prefix="kb-tf-") as tmp:
        cli = os.path.join(tmp, "terraformrc")
        with open(cli, "w") as f:
            f.write('provider_installation {\n  filesystem_mirror {\n'
                    f'    path    = "{mirror}"\n    include = ["registry.terraform.io/hashicorp/aws"]\n'
                    '  }\n}\n')
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": tmp,
               "TF_CLI_CONFIG_FILE": cli, "TF_IN_AUTOMATION": "1", "CHECKPOINT_DISABLE": "1",
               "TF_DATA_DIR": ".terraform", "NO_COLOR": "1",
               # never real AWS: no credentials, no metadata service
               "AWS_EC2_METADATA_DISABLED": "true"}
        work = os.path.join(tmp, "terraform")
        shutil.copytree(TF_DIR, work, ignore=shutil.ignore_patterns(".terraform*", "*.tfstate*"))
        print(tf(env, work, "version").splitlines()[0], "| provider mirror", mirror)

        # formatting of the checked-in files (the copy is identical)
        tf(env, work, "fmt", "-check", "-recursive", "-diff")
        print("ok: terraform fmt -check")

        sync_mod = os.path.join(work, "keybridge-sync")
        for d in (sync_mod, os.path.join(sync_mod, "examples", "minimal"),
                  os.path.join(work, "svid-store-role")):
            tf(env, d, "init", "-input=false", "-backend=false")
            tf(env, d, "validate", "-no-color")
            print("ok: init + validate", os.path.relpath(d, work))

        # expected values from the real programs
        names = [f"app-{i:03d}.team{i % 7}" for i in range(200)]
        names += ["a", "Payments", "x" * 128, "y" * 246, "a.b+c=d@e_f-g", "0", "app_with_underscores",
                  "UPPER.lower-123", "=", "@"]
        pol = json.loads(subprocess.run(
            [SYNC, "iam-policy", "payments", "--account", "111122223333", "--region", "eu-west-1",
             "--svid-secret", "keybridge/svid/payments"], stdout=subprocess.PIPE, check=True).stdout)
        sha_hex = "9F86D081884C7D659A2FEAA0C55AD015A3BF4F1B2B0B822CD15D6C15B0F00A08"
        tfvars = {
            "expected_schedules": schedules(names, 15),
            "expected_schedules_5": schedules(names[:25], 5),
            "expected_schedules_60": schedules(names[:25], 60),
            "expected_syncer_policy": json.dumps(pol["syncer_role"]),
            "expected_function_policy": json.dumps(pol["function_role"]),
            "expected_cron": schedules(["payments"], 15)["payments"],
            "expected_sha256_base64": base64.b64encode(bytes.fromhex(sha_hex)).decode(),
        }
        # the binary and Python agree on the documented formula (so the map is not garbage)
        for n in names[:5]:
            m = int(hashlib.sha256(n.encode()).hexdigest()[:8], 16) % 15
            assert tfvars["expected_schedules"][n] == f"cron({m}/15 * * * ? *)", n
        assert len(tfvars["expected_schedules"]) >= 200
        var_file = os.path.join(tmp, "expected.tfvars.json")
        with open(var_file, "w") as f:
            json.dump(tfvars, f)

        out = tf(env, sync_mod, "test", "-no-color", f"-var-file={var_file}", timeout=840)
        print("\n".join(l for l in out.splitlines() if "run " in l or "passed" in l))
        assert "0 failed" in out, out
        print(f"ok: keybridge-sync module: terraform test ({len(names)} names' schedules equal "
              "keybridge-sync schedule; role policy equals keybridge-sync iam-policy)")

        out = tf(env, os.path.join(work, "svid-store-role"), "test", "-no-color")
        assert "0 failed" in out, out
        print("ok: svid-store-role module: terraform test")

        # nothing in the modules holds a secret: no sensitive inputs, no credentials or keys
        for root, _, files in os.walk(TF_DIR):
            for fn in files:
                if not fn.endswith((".tf", ".hcl")):
                    continue
                text = open(os.path.join(root, fn)).read()
                for bad in ("AWS_SECRET_ACCESS_KEY", "secret_access_key", "PRIVATE KEY",
                            "sensitive", "_PIN", "password"):
                    assert bad not in text, (fn, bad)
        print("ok: no secret material or secret inputs in deploy/terraform")
    print("PASS")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Kernel matrix results: one JSON file per kernel, and the README's table.

    kernel-matrix-report.py result --out DIR --label L --release R [--native]
        --seconds S --support-rc N
      Reads what scripts/kernel-matrix-suite.sh left in DIR: support.txt (`bpftune -S`),
      daemon.env, daemon.log and daemon-tuners.txt (daemon start, netns churn, stop:
      written by the Rust test netns_churn with BPFTUNE_CHURN_REPORT=DIR), tests.tsv,
      tests/BINARY::TEST.log (one libtest run per test) and tests/BINARY::TEST.skip
      (the test's `skip!` reason: skipped, not passed); writes DIR/result.json.

    kernel-matrix-report.py summary DIR/result.json
      Prints a few summary lines; exit status 0 only if the kernel passed: `-S` exited
      0, the daemon started with every tuner attached and survived the churn, and every
      selected test passed or skipped (at least one passed).

    kernel-matrix-report.py table [RESULTS_DIR]
      Prints a Markdown "Supported kernels" table from RESULTS_DIR/*/result.json
      (default target/kernel-matrix/results): kernel | chosen flavour per hook | daemon
      (start with every tuner attached, netns churn, stop) | tests passed, with the
      failed tests listed below it.

Used by scripts/kernel-matrix-suite.sh; standard library only.
"""

import argparse
import json
import re
import sys
from pathlib import Path

# `bpftune -S` table rows (stderr, each line prefixed "bpftune: "), columns padded to
# 12, 14 and 44 characters (a longer value pushes the rest right by one space):
#   TUNER  HOOK[(opt)]  CHOSEN  WHY
# CHOSEN is "FLAVOUR TARGET" (TARGET may contain a space: "cgroup/sysctl cgroup-v2
# root"), "NONE: tuner cannot run" or "none: feature off"; WHY lists the attempts,
# "FLAVOUR TARGET: STATUS" separated by "; ".
ROW = re.compile(r"^(?P<tuner>\S+)\s+(?P<hook>\S+)\s+(?P<rest>.*)$")
NO_FLAVOUR = ("NONE: tuner cannot run", "none: feature off")
FEATURE_ROW = re.compile(r"^feature\s+(?P<what>\S+(?: \S+)?)\s+(?P<state>.+)$")
TEST_RESULT = re.compile(r"^test result: \w+\. (?P<passed>\d+) passed; (?P<failed>\d+) failed")
ATTACH_FAILED = re.compile(r"failed to attach to [^']*'(?P<target>[^']+)'(?::\s*(?P<err>\S+))?")
STARTED = re.compile(r"bpftune started: tuners (?P<tuners>.*?) attached in (?P<ms>\d+) ms")

def split_chosen(rest):
    """CHOSEN and WHY of a row's remainder."""
    for none in NO_FLAVOUR:
        if rest.startswith(none):
            return none, rest[len(none):].strip()
    parts = re.split(r"\s{2,}", rest.strip(), maxsplit=1)
    if len(parts) == 2:
        return parts[0], parts[1]
    # CHOSEN filled its column: it is the attempt "CHOSEN: supported" named in WHY.
    words = rest.split(" ")
    for i in range(2, len(words)):
        chosen, why = " ".join(words[:i]), " ".join(words[i:])
        if any(a.strip().startswith(chosen + ": ") for a in why.split(";")):
            return chosen, why
    return rest.strip(), ""


def parse_support(text):
    lines = [l.removeprefix("bpftune: ").rstrip() for l in text.splitlines()]
    level = next(
        (l for l in lines if l.startswith("bpftune ") and ("works" in l or "not supported" in l)),
        None,
    )
    hooks, features = [], {}
    in_table = False
    for l in lines:
        if l.startswith("TUNER "):
            in_table = True
            continue
        if not in_table or not l.strip():
            continue
        m = FEATURE_ROW.match(l)
        if m:
            features[m["what"]] = m["state"]
            continue
        m = ROW.match(l)
        if not m:
            continue
        chosen, why = split_chosen(m["rest"])
        hook = m["hook"]
        optional = hook.endswith("(opt)")
        ok = chosen not in NO_FLAVOUR
        flavour, _, target = chosen.partition(" ") if ok else (None, None, None)
        hooks.append(
            {
                "tuner": m["tuner"],
                "hook": hook.removesuffix("(opt)"),
                "optional": optional,
                "chosen": chosen if ok else None,
                "flavour": flavour,
                "target": target,
                "attempts": [a.strip() for a in why.split(";") if a.strip()],
            }
        )
    return {"level": level, "hooks": hooks, "features": features}


def read_env(path):
    env = {}
    if path.exists():
        for line in path.read_text().splitlines():
            k, _, v = line.partition("=")
            env[k] = v
    return env


def number(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def parse_daemon(out, tuners):
    """The daemon check: started with every tuner attached, survived the churn with a
    flat fd count, answered `tuners` with every tuner active, exited 0 on SIGTERM."""
    env = read_env(out / "daemon.env")
    log_path = out / "daemon.log"
    log = log_path.read_text(errors="replace") if log_path.exists() else ""
    lines = [l.removeprefix("bpftune: ") for l in log.splitlines() if "libbpf:" not in l]
    m = next((STARTED.search(l) for l in lines if STARTED.search(l)), None)
    attached = [t.strip() for t in m["tuners"].split(",")] if m else []
    errors = [l for l in lines if "could not attach" in l or "cannot run on this kernel" in l]
    errors += [
        l.removeprefix("bpftune: ").replace("libbpf: libbpf: ", "libbpf: ")
        for l in log.splitlines()
        if "libbpf:" in l and re.search(r"failed to (attach|load)", l) and "BPF token" not in l
    ]
    states = {}
    qt = out / "daemon-tuners.txt"
    if qt.exists():
        for l in qt.read_text(errors="replace").splitlines():
            w = l.split()
            if len(w) == 2:
                states[w[0]] = w[1]
    status = env.get("status", "not run")
    problems = []
    if status.startswith("exited-") or status == "no-start":
        last = lines[-1] if lines else "empty log"
        problems.append(f"{status.replace('-', ' ')}: {last[:90]}")
    elif status != "started":
        problems.append(status)
    missing = [t for t in tuners if t not in attached]
    if m and missing:
        problems.append("not attached: " + ", ".join(missing))
    inactive = [t for t in attached if t in states and states[t] != "active"]
    if inactive:
        problems.append("inactive after churn: " + ", ".join(inactive))
    if m and env.get("churn_ok") != "1":
        problems.append("netns churn failed")
    f0, f1 = number(env.get("fds_before")), number(env.get("fds_after"))
    if f0 is not None and f1 is not None and f1 > f0 + 5:
        problems.append(f"fd leak {f0:.0f} -> {f1:.0f}")
    t0, t1 = number(env.get("threads_before")), number(env.get("threads_after"))
    if t0 is not None and t1 is not None and t1 > t0 + 2:
        problems.append(f"thread leak {t0:.0f} -> {t1:.0f}")
    return {
        "status": status,
        "ok": not problems,
        "problems": problems,
        "attached": attached,
        "attach_ms": int(m["ms"]) if m else None,
        "errors": errors,
        "attach_failed": {
            m["target"]: (m["err"] or "").lstrip("-")
            for m in map(ATTACH_FAILED.search, log.splitlines())
            if m
        },
        "start_seconds": number(env.get("start_seconds")),
        "churn": {
            "namespaces": int(env.get("churn_namespaces") or 0),
            "ok": env.get("churn_ok") == "1",
            "seconds": number(env.get("churn_seconds")),
            "fds_before": f0,
            "fds_after": f1,
            "threads_before": t0,
            "threads_after": t1,
            "tuners_query": states,
        },
        "log_tail": lines[-30:] if problems else [],
    }


def parse_tests(out):
    tests = []
    tsv = out / "tests.tsv"
    if not tsv.exists():
        return tests
    for line in tsv.read_text().splitlines():
        binary, name, rc, secs = line.split("\t")
        log = out / "tests" / f"{binary}::{name}.log"
        text = log.read_text(errors="replace") if log.exists() else ""
        m = next((TEST_RESULT.match(l) for l in text.splitlines() if TEST_RESULT.match(l)), None)
        skip = out / "tests" / f"{binary}::{name}.skip"
        skipped = [l for l in skip.read_text(errors="replace").splitlines() if l.strip()] if skip.exists() else []
        reason = None
        if rc in ("124", "137"):
            result = "timeout"
        elif rc == "0" and m and int(m["passed"]) == 1 and skipped:
            # libtest counts an early return as passed; skip! recorded why it returned.
            result = "skipped"
            reason = skipped[0].split(": ", 1)[-1]
        elif rc == "0" and m and int(m["passed"]) == 1:
            result = "ok"
        elif rc == "0":
            result = "not found"  # the filter matched no test
        else:
            result = "failed"
        t = {"binary": binary, "name": name, "result": result, "exit": int(rc), "seconds": float(secs)}
        if reason is not None:
            t["skip_reason"] = reason
        tests.append(t)
    return tests


def cmd_result(a):
    out = Path(a.out)
    support_txt = out / "support.txt"
    support = parse_support(support_txt.read_text(errors="replace") if support_txt.exists() else "")
    support["exit"] = a.support_rc
    tuners = []
    for h in support["hooks"]:
        if h["tuner"] not in tuners:
            tuners.append(h["tuner"])
    daemon = parse_daemon(out, tuners)
    # The probe (-S) only loads; whether a chosen flavour also attaches is known from
    # the daemon: true if its tuner attached, false if libbpf named its target.
    for h in support["hooks"]:
        if h["tuner"] in daemon["attached"]:
            h["attaches"] = h["chosen"] is not None
        elif h["target"] and h["target"] in daemon["attach_failed"]:
            h["attaches"] = False
            h["attach_error"] = daemon["attach_failed"][h["target"]]
        else:
            h["attaches"] = None
    tests = parse_tests(out)
    passed = sum(t["result"] == "ok" for t in tests)
    skipped = [f"{t['binary']}::{t['name']} ({t['skip_reason']})" for t in tests if t["result"] == "skipped"]
    failed = [f"{t['binary']}::{t['name']} ({t['result']})" for t in tests if t["result"] not in ("ok", "skipped")]
    result = {
        "label": a.label,
        "release": a.release,
        "native": a.native,
        "seconds": a.seconds,
        "support": support,
        "daemon": daemon,
        "tests": tests,
        "passed": passed,
        "failed": len(failed),
        "failed_tests": failed,
        "skipped": len(skipped),
        "skipped_tests": skipped,
        "ok": a.support_rc == 0 and daemon["ok"] and not failed and passed > 0,
    }
    (out / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    return 0


def cmd_summary(a):
    r = json.loads(Path(a.result).read_text())
    p = f"kernel-matrix-suite: {r['label']} ({r['release']})"
    for h in r["support"]["hooks"]:
        note = {True: "", False: " (DOES NOT ATTACH)", None: " (attach not checked)"}[h.get("attaches")]
        print(f"{p}: hook {h['tuner']}/{h['hook']}: {h['chosen'] or 'NONE'}{note}")
    d = r["daemon"]
    print(f"{p}: daemon: {'ok' if d['ok'] else 'FAILED: ' + '; '.join(d['problems'])}")
    for e in d["errors"]:
        print(f"{p}: daemon: {e}")
    print(f"{p}: tests: {r['passed']} passed, {r['failed']} failed, {r.get('skipped', 0)} skipped; "
          f"{r['seconds']:.0f}s in all")
    for t in r["failed_tests"]:
        print(f"{p}: FAILED {t}")
    for t in r.get("skipped_tests", []):
        print(f"{p}: SKIPPED {t}")
    print(f"{p}: {'PASS' if r['ok'] else 'FAIL'}")
    return 0 if r["ok"] else 1


def hook_key(h):
    return f"{h['tuner']}: {h['hook']}" + (" (opt)" if h["optional"] else "")


def release_key(r):
    nums = [int(x) for x in re.findall(r"\d+", r["release"])[:3]]
    return (not r["native"], [-n for n in nums])


def cmd_table(a):
    results = []
    for p in sorted(Path(a.dir).glob("*/result.json")):
        try:
            results.append(json.loads(p.read_text()))
        except (OSError, ValueError) as e:
            print(f"kernel-matrix-report: skipping {p}: {e}", file=sys.stderr)
    if not results:
        print(f"kernel-matrix-report: no */result.json under {a.dir}", file=sys.stderr)
        return 1
    results.sort(key=release_key)
    hooks = []
    for r in results:
        for h in r["support"]["hooks"]:
            if hook_key(h) not in hooks:
                hooks.append(hook_key(h))
    head = ["kernel"] + hooks + ["daemon", "tests passed"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    notes = []
    for r in results:
        kernel = r["release"] + (" (host, native)" if r["native"] else f" (qemu, {r['label']})")
        by_key = {hook_key(h): h for h in r["support"]["hooks"]}
        cells = [kernel]
        for k in hooks:
            h = by_key.get(k)
            if h is None:
                cells.append("?")
            elif h["chosen"] and h.get("attaches") is False:
                err = f" ({h['attach_error']})" if h.get("attach_error") else ""
                cells.append(f"`{h['chosen']}` **loads, does not attach{err}**")
            elif h["chosen"]:
                cells.append(f"`{h['chosen']}`")
            else:
                cells.append("**none**" if not h["optional"] else "none (feature off)")
        d = r["daemon"]
        cells.append("ok" if d["ok"] else "**" + "; ".join(d["problems"]) + "**")
        n_skip = r.get("skipped", 0)
        cells.append(f"{r['passed']}/{len(r['tests'])}" + (f" ({n_skip} skipped)" if n_skip else ""))
        print("| " + " | ".join(cells) + " |")
        if r["failed_tests"]:
            notes.append(f"- {r['release']}: failed {', '.join(r['failed_tests'])}")
        if r.get("skipped_tests"):
            notes.append(f"- {r['release']}: skipped {', '.join(r['skipped_tests'])}")
    print()
    print(
        "Hooks: the flavour `bpftune -S` chose (the first that loads); \"does not attach\": "
        "the daemon could not attach it. Daemon: starts with every tuner attached, survives a "
        "netns churn, stops cleanly. Tests: root integration tests run on that kernel."
    )
    if notes:
        print()
        print("\n".join(notes))
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("result", help="write DIR/result.json")
    r.add_argument("--out", required=True)
    r.add_argument("--label", required=True)
    r.add_argument("--release", required=True)
    r.add_argument("--native", action="store_true")
    r.add_argument("--seconds", type=float, required=True)
    r.add_argument("--support-rc", type=int, required=True)
    su = sub.add_parser("summary", help="summary lines; exit 1 unless the kernel passed")
    su.add_argument("result")
    t = sub.add_parser("table", help="print the Markdown table")
    t.add_argument("dir", nargs="?", default="target/kernel-matrix/results")
    a = ap.parse_args()
    return {"result": cmd_result, "summary": cmd_summary, "table": cmd_table}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())

"""The figures tables of the READMEs, one function per block (bench/make_tables.py puts them
between the markers): each takes the latest result of every series ({series: Result}, where a
Result has the file's name, series, kind and JSON) and gives the lines of its block, none when
no result of its kind is recorded. Every figure is printed at the precision it is read at.
Python 3 standard library only.
"""
from statistics import median
import textwrap

IMAGE_ORDER = ["minimal", "python"]
IMAGE_LABEL = {"minimal": "minimal (busybox initramfs)",
               "python": "python (bookworm + numpy, ext4 root)"}


def image_rank(image):
    return (IMAGE_ORDER.index(image) if image in IMAGE_ORDER else len(IMAGE_ORDER), image)


def of_kind(results, kind):
    """Results of one kind, in the order their tables show them."""
    rs = [r for r in results.values() if r.kind == kind]
    if kind == "boot":
        return sorted(rs, key=lambda r: image_rank(r["image"]))
    if kind == "spawn":
        return sorted(rs, key=lambda r: (image_rank(r["image"]), r["n"], r["pool"],
                                         r["pool_warm"], ksm_on(r)))
    if kind == "branch":
        return sorted(rs, key=lambda r: (r["memory_mib"], r["dirty_mibps_requested"]))
    return sorted(rs, key=lambda r: r.series)


# Number formats: the precision each figure is read at.
def ms(v):
    return f"{v:.1f}" if abs(v) < 10 else f"{v:.0f}"


def secs(v_ms):
    s = v_ms / 1000
    return f"{s:.2f}" if s < 2 else f"{s:.1f}"


def pause(v):
    return f"{v:.2f}" if v < 10 else f"{v:.1f}" if v < 200 else f"{v:.0f}"


def minus(text):
    return text.replace("-", "\u2212")


def mem_label(mib):
    return f"{mib // 1024} GiB" if mib % 1024 == 0 else f"{mib} MiB"


def table(header, rows):
    def line(cells):
        return "|" + "|".join(f" {c} " if c else " " for c in cells) + "|"
    return [line(header), "|" + "---|" * len(header)] + [line(row) for row in rows]


def para(text):
    """A paragraph wrapped at the READMEs' 100 columns, as lines."""
    return textwrap.wrap(text, 100, break_long_words=False, break_on_hyphens=False)


def caption(rs, more=""):
    """The paragraph naming the files a block was made from, what they say of the host, and more."""
    files = ", ".join(f"`{r.file}`" for r in rs)
    facts = sorted({f"accel {r['accel']}" for r in rs if r.get("accel")})
    loads = [(r.series, r["host_loadavg"]) for r in rs if r.get("host_loadavg")]
    if len(rs) == 1 and loads:
        facts.append(f"host load average (1, 5 min) {loads[0][1]}")
    elif loads:
        facts.append("host load average (1, 5 min): " + "; ".join(f"{s} {v}" for s, v in loads))
    return para(f"From {files}" + (f" ({', '.join(facts)})" if facts else "") + "." +
                (" " + more if more else ""))


# The blocks. Each returns the lines between its markers.
def block_boot(results):
    rs = of_kind(results, "boot")
    if not rs:
        return []
    machines = []
    for r in rs:
        machines += [m["machine"] for m in r["results"] if m["machine"] not in machines]
    rows = []
    for r in rs:
        by = {m["machine"]: m for m in r["results"]}
        row = [IMAGE_LABEL.get(r["image"], r["image"])]
        row += [f"{ms(by[m]['boot_to_ping_ms']['median'])} ms" if m in by else "\u2013"
                for m in machines]
        row.append(f"{ms(r['results'][0]['exec_rtt_ms']['median'])} ms")
        rows.append(row)
    first = machines[0] if machines else ""
    return caption(rs) + [""] + table(["image"] + machines + [f"exec round trip ({first})"], rows)


def ksm_on(r):
    """A spawn run whose children's memory KSM merged (`bench spawn --ksm`, since 2026-12-03)."""
    return r.data.get("ksm", {}).get("enabled", False)


def spawn_column(r):
    pool = ", warm pool" if r["pool"] and r["pool_warm"] else ", pool" if r["pool"] else ""
    return r["image"] + pool + (", KSM" if ksm_on(r) else "")


def block_spawn(results):
    rs = of_kind(results, "spawn")
    if not rs:
        return []
    ns = {r["n"] for r in rs}
    n = f"{ns.pop()} children" if len(ns) == 1 else "all children"
    singles = {r["single_child_ms"]["n"] for r in rs}
    alone = f"p50 of {singles.pop()}" if len(singles) == 1 else "p50"
    dash = "\u2013"

    def cold(r):
        return f"{ms(r['cold_boot_ms']['total'])} ms" if "cold_boot_ms" in r.data else dash

    def plain(r):
        if "plain_restore_ms" not in r.data:
            return dash
        p = r["plain_restore_ms"]
        return f"{ms(p['total'])} ms" + ("" if r["pool"] else f" ({p['state_mib']} MiB)")

    def speedup(r):
        if "speedup_vs_cold_p50" not in r.data:
            return dash
        batch = f"{r['speedup_vs_cold_p50']:.0f}x"
        return batch if r["pool"] else f"{batch} batch, {r['single_speedup_vs_cold']:.0f}x alone"

    def idle_cpu(r):  # measured over at least 10 s (shorter windows are below /proc's resolution)
        if r.data.get("idle_s", 0) < 10 or not r.data.get("idle_cpu_pct", {}).get("n"):
            return dash
        return (f"{r['idle_cpu_pct']['median']:.2f} % ({r['idle_cpu_pct_all_children']:.1f} %)"
                f" over {r['idle_s']:.0f} s")

    def ksm(r):
        if not ksm_on(r):
            return dash
        k = r["ksm"]
        cpu = (f"{k['ksmd_cpu_pct_idle']:.1f} % of a core" if "ksmd_cpu_pct_idle" in k
               else "ksmd's CPU unknown")
        return f"{k['saved_mib']:.0f} MiB; {cpu} ({k['pages_to_scan']} pages / {k['sleep_ms']} ms)"

    def pooled_alone(r):  # recorded since 2026-12-03 (later runs)
        p = r.data.get("single_child_pooled_ms", {})
        return f"{ms(p['median'])} ms" if p.get("n") else dash

    def claim_uncounted(r):  # recorded when a pooled child's launch counted as 0
        return r["pool"] and "child_latency_includes_claim" not in r.data

    def part(name):
        def f(r):
            if not r["breakdown_ms"].get(name, {}).get("n"):
                return dash
            if name == "qemu_launch" and claim_uncounted(r):
                return dash
            return f"{ms(r['breakdown_ms'][name]['median'])} ms"
        return f

    rows = [
        (f"{n} all ready", lambda r: f"{secs(r['wall_ms'])} s"),
        ("per child in the batch, p50 / p99", lambda r: (
            f"{ms(r['child_latency_ms']['median'])} / {ms(r['child_latency_ms']['p99'])} ms")),
        (f"one child alone (no pool), {alone}",
         lambda r: f"{ms(r['single_child_ms']['median'])} ms"),
        ("one child alone from a pool of one, p50 (target with a warm pool \u2264 30 ms)",
         pooled_alone),
        ("cold boot + warm-up, same image", cold),
        ("QEMU plain restore (RAM in stream)", plain),
        ("fork speed-up vs cold boot + warm-up", speedup),
        ("USS / PSS per idle child",
         lambda r: f"{r['uss_mib']['median']:.1f} / {r['pss_mib']['median']:.1f} MiB"),
    ]
    if any(ksm_on(r) for r in rs):
        rows.append(("KSM: saved on the host; ksmd's CPU in the idle window (scan rate)", ksm))
    rows += [
        ("CPU per idle child, median (all children, % of a core)", idle_cpu),
        ("pool preparation (off the fork path)",
         lambda r: f"{secs(r['pool_prestart_ms'])} s" if r["pool"] else dash),
        ("p50 in the batch: QEMU start (pooled: the claim)", part("qemu_launch")),
    ]
    if any(r["breakdown_ms"].get("pool_claim", {}).get("n") for r in rs):
        rows.append(("p50 in the batch: pool claim (QMP connect + handshake)", part("pool_claim")))
    rows += [("p50 in the batch: device-state load", part("device_state_load")),
             ("p50 in the batch: identity (`resumed`)", part("identity"))]
    out = caption(rs) + [""] + table([""] + [spawn_column(r) for r in rs],
                                     [[label] + [f(r) for r in rs] for label, f in rows])
    old = [f"*{spawn_column(r)}*" for r in rs if claim_uncounted(r)]
    if old:
        out += [""] + para(
            f"The per-child figures in {' and '.join(old)} were recorded when a pooled child's "
            "launch counted as 0: they leave out the claim itself (taking the member, QMP connect and handshake), "
            "which only the \"all ready\" wall time includes. `bench spawn` now counts the claim "
            "in the child's launch and latency and reports it alone as `breakdown_ms.pool_claim`.")
    return out


def block_api(results):
    out = []
    for r in of_kind(results, "api"):
        def row(label, s, p50="median"):
            return [label] + [f"{s[k]:.2f} ms" for k in (p50, "p90", "mean")]
        rows = [row("exec `true`, engine direct", r["exec_direct_ms"]),
                row("exec `true`, through REST", r["exec_rest_ms"]),
                row("`GET /healthz` (HTTP alone)", r["healthz_rest_ms"]),
                row("REST minus direct", r["rest_overhead_ms"], "p50")]
        out += caption([r]) + [""] + table(["", "p50", "p90", "mean"], rows)
    return out


def block_exec(results):
    out = []
    for r in of_kind(results, "exec"):
        t = r["targets_ms"]

        def row(label, key, target=None):
            if key not in r.data:
                return None
            s = r[key]
            goal = f"\u2264 {t[target]:.0f} ms" if target in t else ""
            return [label] + [f"{ms(s[k])} ms" for k in ("median", "p90", "max")] + [goal]
        rows = [row("attach (the agent connection)", "attach_ms"),
                row("first exec `true` after the fork", "exec_first_ms"),
                row("later exec `true`", "exec_ms", "exec_p50"),
                row("first eval `1 + 1` after the fork", "eval_first_ms"),
                row("later eval `1 + 1`", "eval_ms", "eval_p50")]
        out += caption([r], f"Image {r['image']}, {r['children']} children forked one at a time, "
                        f"{r['runs']} later calls of each kind per child.") + [""] + table(
            ["", "p50", "p90", "max", "target (p50)"], [x for x in rows if x])
    return out


def branch_column(r):
    w = r.get("writer")
    return mem_label(r["memory_mib"]) + (
        f", writer {w['dirty_mibps_idle']:.1f} MiB/s" if w else ", idle")


def mode_of(r, name):
    return next((m for m in r["modes"] if m["mode"] == name), None)


def block_branch(results):
    rs = of_kind(results, "branch")
    if not rs:
        return []
    dash = "\u2013"
    modes = []
    for r in rs:
        modes += [m["mode"] for m in r["modes"] if m["mode"] not in modes]

    def in_mode(name, f):
        return lambda r: f(mode_of(r, name)) if mode_of(r, name) else dash

    def pauses(m):
        p = m["pause_ms"]
        return f"{pause(p['median'])} / {pause(p['p90'])} / {pause(p['max'])} ms"

    rows = []
    for name in modes:
        rows.append((f"{name}: pause p50 / p90 / max", in_mode(name, pauses)))
        if name == "full":  # the source is stopped throughout: the pause is the copy
            rows.append((f"{name}: whole call p50",
                         in_mode(name, lambda m: f"{m['total_ms']['median']:.0f} ms")))
            continue
        rows.append((f"{name}: pause p50 split, switchover + resume", in_mode(name, lambda m: (
            f"{m['switchover_ms']['median']:.2f} + {m['resume_ms']['median']:.2f} ms"))))
        rows.append((f"{name}: whole call p50 (copy p50)", in_mode(name, lambda m: (
            f"{m['total_ms']['median']:.0f} ms ({m['copy_ms']['median']:.0f} ms)"))))

    def plain(key):
        def f(r):
            b = r["plain_save"]
            if key not in b:
                return dash
            return (f"{pause(b[key]['median'])} ms ({pause(b[key]['max'])}), "
                    f"{b['stream_mib']:.0f} MiB stream")
        return f

    rows.append(("plain QEMU stop + full save + fsync: pause p50 (max)", plain("pause_ms")))
    no_fsync = any("pause_without_fsync_ms" in r["plain_save"] for r in rs)
    if no_fsync:
        rows.append(("plain QEMU stop + full save, no fsync: pause p50 (max)",
                     plain("pause_without_fsync_ms")))
    for name in modes:
        bold = "**" if name == "live" else ""
        target = " (target \u2264 5 %)" if name == "live" else ""
        digits = 1 if name != "full" else 0
        rows.append((f"{bold}{name} pause p50 / plain save p50{bold}{target}", in_mode(
            name, lambda m, b=bold, d=digits: (
                f"{b}{m['pause_p50_over_plain_save_p50'] * 100:.{d}f} %{b}"))))
        if no_fsync:
            key = "pause_p50_over_plain_save_without_fsync_p50"
            rows.append((f"{name} pause p50 / plain save without fsync p50", in_mode(
                name, lambda m, d=digits: f"{m[key] * 100:.{d}f} %" if key in m else dash)))
    link_mode = "live" if "live" in modes else modes[0] if modes else ""

    def link(r):
        m = mode_of(r, link_mode)
        if not m or not m.get("runs"):
            return dash
        mibs = sorted(run["link_mib"] for run in m["runs"])
        return f"{mibs[len(mibs) // 2]:.0f} MiB"

    rows.append(("memory stored per branch (link of the tag)", link))

    def writer(r):
        if not r.get("writer"):
            return dash
        rates = [f"{r['writer']['dirty_mibps_idle']:.1f}"]
        rates += [f"{m['dirty_mibps_during']:.1f}" for m in r["modes"] if "dirty_mibps_during" in m]
        return " / ".join(rates) + " MiB/s"

    if any(r.get("writer") for r in rs):
        rows.append(("guest writer: idle / during each series (" + ", ".join(modes) + ")", writer))
    return caption(rs) + [""] + table([""] + [branch_column(r) for r in rs],
                                      [[label] + [f(r) for r in rs] for label, f in rows])


def series_met(pauses):
    """The target for a series of branch pauses (ms): max / median <= 1.5, or max <= median + 1 ms
    (the issue's words), the difference taken at 0.01 ms (the JSON holds pauses to the
    microsecond)."""
    med, top = median(pauses), max(pauses)
    return top <= 1.5 * med or round(top - med, 2) <= 1.0


def block_branch_series(results):
    out = []
    for r in of_kind(results, "branch"):
        m = mode_of(r, "live")
        if not m:
            continue
        ratio = m["series_max_over_median"]
        label = mem_label(r["memory_mib"]) + (" with writer" if r.get("writer") else "")
        series = " ".join(f"{p:.1f}" for p in m["pause_series_ms"])
        over = round(max(m["pause_series_ms"]) - median(m["pause_series_ms"]), 2)
        met = series_met(m["pause_series_ms"])
        item = para(f"- {label}: {series} \u2014 max / median = **{ratio:.2f}**, max \u2212 median = "
                    f"**{over:.2f} ms** (target \u2264 1.5 or \u2264 1 ms: "
                    f"{'met' if met else 'missed'}), later / earlier = "
                    f"{m['series_late_over_early_median']:.2f}")
        out += item[:1] + ["  " + line for line in item[1:]]
    return out


def block_chain(results):
    rs = [r for r in of_kind(results, "branch") if r.get("chain")]
    if not rs:
        return []
    depths = max((len(r["chain"]["depths"]) for r in rs), default=0)
    rows = []
    for d in range(depths):
        row = ["0 (base)" if d == 0 else str(d)]
        for r in rs:
            ds = r["chain"]["depths"]
            row.append(f"{ds[d]['later_spawn_ms']['median']:.1f} ({ds[d]['first_spawn_ms']:.1f})"
                       if d < len(ds) else "\u2013")
        rows.append(row)
    rows.append(["tax per link, (depth d \u2212 depth 0) / d"] + [
        minus(", ".join(f"{d['per_link_tax_ms']:.1f}" for d in r["chain"]["depths"][1:]))
        for r in rs])
    return table(["depth"] + [mem_label(r["memory_mib"]) for r in rs], rows)


def block_pack(results):
    out = []
    for r in of_kind(results, "pack"):
        f, t, n = r["forkd"], r["tar_zstd"], r["forkd_without_image"]
        files = r.get("files", {})
        mb = lambda b: f"{b / 1e6:.1f} MB"  # noqa: E731
        parts = [f"memory {mb(files.get('memory', 0))}",
                 f"the image's root disk {mb(files.get('base', 0))}",
                 f"kernel {mb(files.get('kernel', 0))}",
                 f"vmstate and disk overlay {mb(files.get('vmstate', 0) + files.get('disk', 0))}"]
        out += caption([r], f"Tag `{r['tag']}` of {r['memory_mib']} MiB, "
                       f"{mb(r['logical_bytes'])} of files: " + ", ".join(parts) +
                       f". Medians of {r['runs']}.") + [""]
        rows = [["forkd pack / unpack", mb(f["pack_bytes"]), f"{f['ratio']:.1f}x",
                 f"{f['pack_mbps']:.0f} MB/s", f"{f['unpack_mbps']:.0f} MB/s"],
                ["tar --sparse \\| zstd -T0", mb(t["pack_bytes"]), f"{t['ratio']:.1f}x",
                 f"{t['pack_mbps']:.0f} MB/s", f"{t['unpack_mbps']:.0f} MB/s"],
                [f"forkd pack --without-image ({mb(n['logical_bytes'])})", mb(n["pack_bytes"]),
                 f"{n['ratio']:.1f}x", f"{n['pack_mbps']:.0f} MB/s", "\u2013"]]
        out += table(["", "pack size", "ratio", "pack", "unpack"], rows)
        if t["pack_mbps"] and t["unpack_mbps"]:
            out += [""] + para(f"forkd packs {f['pack_mbps'] / t['pack_mbps']:.1f}x and unpacks "
                               f"{f['unpack_mbps'] / t['unpack_mbps']:.1f}x faster than tar+zstd.")
    return out


def block_sdk(results):
    out = []
    for r in of_kind(results, "sdk"):
        def p(key):
            return f"{r[key]['p50_ms']:.2f} / {r[key]['p90_ms']:.2f} ms"
        rows = [["exec `true`, p50 / p90", p("exec")],
                ["exec `true`, streamed, p50 / p90", p("exec_streamed")],
                ["background start + wait, p50 / p90", p("background_start_wait")]]
        if "eval" in r.data:
            rows.append(["eval `1 + 1` on the python tag, p50 / p90", p("eval")])
        s, fl = r["stream_first_chunk"], r["files"]
        rows += [["`echo first; sleep 2; echo second`: first chunk / end",
                  f"{s['first_ms']:.1f} / {s['end_ms']:.1f} ms"],
                 [f"files of {fl['mib']} MiB: upload / download",
                  f"{fl['upload_mib_s']:.1f} / {fl['download_mib_s']:.1f} MiB/s"]]
        out += caption([r], f"{r['exec']['runs']} runs each.") + [""] + table(["", "figure"], rows)
    return out


def block_summary(results):
    """The headline figures of the top-level README."""
    def per_image(rs, f, unit):
        rs = [r for r in rs if r["image"] in IMAGE_ORDER]
        if not rs:
            return None
        return (" / ".join(r["image"] for r in rs), " / ".join(f(r) for r in rs) + unit)

    boots = of_kind(results, "boot")
    spawns = of_kind(results, "spawn")
    cold = [r for r in spawns if not r["pool"] and not ksm_on(r)]
    warm = [r for r in spawns if r["pool"] and r["pool_warm"] and not ksm_on(r)]
    merged = [r for r in spawns if not r["pool"] and ksm_on(r)]
    rows = []

    def add(label, got):
        if got:
            rows.append([f"{label} ({got[0]})", got[1]])

    add("cold boot until the agent answers, microvm", per_image(boots, lambda r: ms(next(
        m["boot_to_ping_ms"]["median"] for m in r["results"])), " ms"))
    add("fork of one child alone, p50", per_image(
        cold, lambda r: ms(r["single_child_ms"]["median"]), " ms"))
    if cold:
        add(f"{cold[0]['n']} children from a tag, all ready",
            per_image(cold, lambda r: secs(r["wall_ms"]), " s"))
    if warm:
        add(f"{warm[0]['n']} children from a warm pool, all ready",
            per_image(warm, lambda r: secs(r["wall_ms"]), " s"))
    pooled = [r for r in warm if r.data.get("single_child_pooled_ms", {}).get("n")]
    add("fork of one child from a warm pool, p50", per_image(
        pooled, lambda r: ms(r["single_child_pooled_ms"]["median"]), " ms"))
    add("memory per idle child, USS", per_image(
        cold, lambda r: f"{r['uss_mib']['median']:.1f}", " MiB"))
    add("memory per idle child with FORKD_KSM=1, USS", per_image(
        merged, lambda r: f"{r['uss_mib']['median']:.1f}", " MiB"))
    idle = [r for r in cold if r.data.get("idle_s", 0) >= 10 and r["idle_cpu_pct"]["n"]]
    if idle:
        add(f"CPU per idle child, median, {idle[0]['n']} children idle", per_image(
            idle, lambda r: f"{r['idle_cpu_pct']['median']:.2f}", " % of a core"))
    branches = [r for r in of_kind(results, "branch") if mode_of(r, "live")]
    if branches:
        labels = " / ".join(branch_column(r) for r in branches)
        live = [mode_of(r, "live") for r in branches]
        rows.append([f"BRANCH (live) pause p50 ({labels})",
                     " / ".join(pause(m["pause_ms"]["median"]) for m in live) + " ms (" +
                     " / ".join(f"{m['pause_p50_over_plain_save_p50'] * 100:.1f} %" for m in live)
                     + " of QEMU's stop + save)"])
    for r in of_kind(results, "exec"):
        figs = [f"exec {r['exec_ms']['median']:.1f} ms"]
        if "eval_ms" in r.data:
            figs.append(f"eval {r['eval_ms']['median']:.1f} ms")
        rows.append([f"exec `true` / eval `1 + 1` in a {r['image']} child, p50",
                     " / ".join(figs)])
    for r in of_kind(results, "api"):
        rows.append(["what the REST daemon adds to an exec, p50",
                     f"{r['rest_overhead_ms']['p50']:.2f} ms"])
    for r in of_kind(results, "pack"):
        f, t = r["forkd"], r["tar_zstd"]
        rows.append([f"pack / unpack of a {r['memory_mib']} MiB tag (tar + zstd: "
                     f"{t['pack_mbps']:.0f} / {t['unpack_mbps']:.0f} MB/s)",
                     f"{f['pack_mbps']:.0f} / {f['unpack_mbps']:.0f} MB/s"])
    return table(["", "figure"], rows) if rows else []


BLOCKS = {"summary": block_summary, "boot": block_boot, "spawn": block_spawn,
          "api": block_api, "exec": block_exec, "branch": block_branch,
          "branch-series": block_branch_series, "chain": block_chain, "pack": block_pack,
          "sdk": block_sdk}

"""The benchmark's three outputs: results.json, results.md (a Markdown table), results.png."""

from __future__ import annotations

import json
from pathlib import Path

MB = 1e6


def _num(x: float | None, fmt: str = "{:.1f}") -> str:
    return "-" if x is None else fmt.format(x)


def _tps(d: dict | None) -> str:
    if not d:
        return "-"
    if len(d["runs"]) == 1:
        return f"{d['median']:.1f}"
    return f"{d['median']:.1f} ({d['min']:.1f}-{d['max']:.1f})"


def _ratio(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}x"


def _agreement(a: dict | None) -> str:
    if not a:
        return "-"
    return f"{a['common_prefix']}/{a['of']}"


def _quality(q: dict | None) -> str:
    if not q or "perplexity" not in q:
        return "-"
    diff = q.get("vs_reference")
    mark = " †" if q.get("protocol") else ""  # llama-perplexity's own protocol
    return f"{q['perplexity']:.3f}" + ("" if diff is None else f" ({100 * diff:+.2f} %)") + mark


def _llamacpp_quality(q: dict | None) -> list[str]:
    lc = (q or {}).get("llama_cpp")
    if not lc:
        return []
    if lc.get("status") == "not measured":
        return [f"- llama.cpp perplexity: not measured: {lc['reason']}"]
    ref = (lc.get("reference") or {}).get("perplexity")
    ref_text = f" (reference under it: {ref:.3f})" if ref is not None else ""
    return [f"- † llama.cpp through its own {lc['protocol']}, on the same token ids; compared with the PyTorch "
            f"reference under the same protocol{ref_text}", *([f"- {lc['note']}"] if lc.get("note") else [])]


def markdown(report: dict) -> str:
    m, s, model = report["machine"], report["settings"], report["model"]
    band = report["bandwidth"]
    params = model["parameters"]["total"] / 1e6
    lines = [
        f"# bitexport bench: {model['name']} ({params:.1f}M parameters)",
        "",
        f"- Machine: {m['cpu']}, {m['cores']} cores ({', '.join(m['simd']) or 'no SIMD flags read'}), "
        f"load average {m['load_average_start']:.1f} at start, {m['load_average_end']:.1f} at end",
        f"- {s['threads']} threads, prompt {s['prompt_tokens']} tokens, {s['new_tokens']} new tokens, "
        f"{s['repeats']} repetitions (variants alternating); median (min-max)",
        f"- Read bandwidth: {band['start'][0]['gb_per_s']:.1f} GB/s on 1 thread, {band['roofline_gb_per_s']:.1f} GB/s "
        f"on {s['threads']} (the roofline below)",
        f"- Command: `{report['command']}`" if report.get("command") else "",
        "",
        "| variant | file MB | bits / ternary weight | prefill tok/s | decode tok/s | decode vs llama.cpp TQ2_0 "
        "| decode vs fp32 | roofline share | peak RSS MB | export s | export peak MB | greedy agreement "
        "| perplexity (vs reference) | ops/token |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    skipped = []
    for v in report["variants"]:
        if v["status"] != "ok":
            skipped.append(f"- {v['label']}: {v['status']}: {v['reason']}")
            continue
        r = v["ratios"] or {}
        rss = v["peak_rss_bytes"]["median"] / MB if v["peak_rss_bytes"] else None
        lines.append(
            f"| {v['label']} | {_num(v['file_bytes'] and v['file_bytes'] / MB)} | {_num(v['bits_per_ternary_weight'], '{:.2f}')} "
            f"| {_tps(v['prefill_tokens_per_s'])} | {_tps(v['decode_tokens_per_s'])} "
            f"| {_ratio(r.get('decode_vs_llamacpp_tq2_0'))} | {_ratio(r.get('decode_vs_fp32'))} "
            f"| {_num(v['roofline_share'] and 100 * v['roofline_share'], '{:.0f} %')} | {_num(rss, '{:.0f}')} "
            f"| {_num(v['export_s'])} | {_num(v['export_peak_rss_bytes'] and v['export_peak_rss_bytes'] / MB, '{:.0f}')} "
            f"| {_agreement(v['agreement'])} | {_quality(v.get('quality'))} | {_num(v.get('ops_per_token'), '{:d}')} |"
        )
    lines += components_table(report["variants"])
    if skipped:
        lines += ["", "Not measured:", *skipped]
    lines += ["", "Notes:", *[f"- {n}" for n in report.get("notes", [])],
              "- decode vs fp32: against the fp32 export of the same runtime (ExecuTorch's for the others)",
              "- greedy agreement: tokens equal to the PyTorch reference's, counted from the first, over all new tokens",
              *([f"- perplexity: teacher-forced on {report['quality']['text']}, windows of {report['quality']['window']} "
                 "tokens; in brackets the difference from the PyTorch reference's"] if report.get("quality") else []),
              *_llamacpp_quality(report.get("quality")),
              ""]
    return "\n".join(line for line in lines if line is not None)


def components_table(variants: list[dict]) -> list[str]:
    """Where the bytes are: file MB per component for every variant that has a file."""
    from bitexport.targets.components import COMPONENTS

    rows = [v for v in variants if v.get("components")]
    if not rows:
        return []
    out = ["", "Where the bytes are (MB):", "",
           "| variant | head | embedding | " + " | ".join(COMPONENTS) + " | total |",
           "|---|---|---|" + "---:|" * (len(COMPONENTS) + 1)]
    for v in rows:
        c = v["components"]
        emb = (v.get("details") or {}).get("embedding", "-")
        shared = " (shared)" if c.get("head_shares_embedding") else ""
        out.append(f"| {v['label']} | {v.get('head_format') or '-'}{shared} | {emb} | "
                   + " | ".join(f"{c[k] / MB:.1f}" for k in COMPONENTS) + f" | {c['total'] / MB:.1f} |")
    return out


def chart(report: dict, path: Path) -> Path | None:
    """Decode and prefill tokens/s per variant (bars at the median, whiskers min-max)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    rows = [v for v in report["variants"] if v["status"] == "ok" and v["decode_tokens_per_s"]]
    fig, axes = plt.subplots(1, 2, figsize=(12, 0.6 * max(len(rows), 2) + 1.6), sharey=True)
    labels = [v["label"] for v in rows]
    for ax, what, title in ((axes[0], "decode_tokens_per_s", "decode tokens/s"),
                            (axes[1], "prefill_tokens_per_s", "prefill tokens/s")):
        med = [v[what]["median"] for v in rows]
        err = [[m - v[what]["min"] for m, v in zip(med, rows)], [v[what]["max"] - m for m, v in zip(med, rows)]]
        colors = ["#d62728" if v["key"].startswith("llamacpp") else "#1f77b4" for v in rows]
        ax.barh(range(len(rows)), med, xerr=err, color=colors, capsize=3)
        for i, x in enumerate(med):
            ax.text(x, i, f" {x:.1f}", va="center", fontsize=8)
        ax.set_title(title)
        ax.set_yticks(range(len(rows)), labels)
        ax.invert_yaxis()
        ax.grid(axis="x", alpha=0.3)
    s, m = report["settings"], report["machine"]
    fig.suptitle(f"{report['model']['name']}: {s['threads']} threads, {m['cpu']} ({m['cores']} cores)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_outputs(report: dict, out: Path) -> dict[str, Path | None]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    js = out / "results.json"
    js.write_text(json.dumps(report, indent=2, default=str) + "\n")
    md = out / "results.md"
    md.write_text(markdown(report))
    png = chart(report, out / "results.png")
    if png is None:
        report.setdefault("notes", []).append("results.png not written: matplotlib is not installed (pip install 'bitexport[bench]')")
        js.write_text(json.dumps(report, indent=2, default=str) + "\n")
    return {"json": js, "markdown": md, "png": png}

"""Render what the main boards show, as PNGs for docs/boards/, from a real run.

Starts what `make demo` starts (the local stack must be up: `cityops stack up`): a worker
on its own topics, group and Redis namespace, both receivers pointed at a local
stand-in, the simulated city, and a real Prometheus scraping the worker every second.
After ``--minutes`` it runs every timeseries / bar-gauge / stat panel query of the
chosen dashboards (streams/dashboards.py, the same queries Grafana runs) against that
Prometheus and draws them with matplotlib, one PNG per dashboard. Titles are the
English half of the bilingual panel titles (the PNGs use matplotlib's default font).

    .venv/bin/python dashboards/render.py [--minutes 4] [--out docs/boards] [--boards overview,hazmat,air,pipeline]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import yaml  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from streams import stack  # noqa: E402
from streams.dashboards import build_all  # noqa: E402
from streams.stack.prometheus import PrometheusProcess  # noqa: E402
from streams.topology import load_topology  # noqa: E402


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _Sink(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802  (http.server's name)
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def query_range(prom: PrometheusProcess, expr: str, start: float, end: float, step: float) -> list[dict[str, Any]]:
    params = urllib.parse.urlencode({"query": expr, "start": start, "end": end, "step": step})
    with urllib.request.urlopen(f"{prom.url}/api/v1/query_range?{params}", timeout=30) as resp:
        return list(json.loads(resp.read())["data"]["result"])


def legend(fmt: str, labels: dict[str, str]) -> str:
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), fmt) or ",".join(labels.values())


def english(title: str) -> str:
    return title.rsplit(" / ", 1)[-1]


def render(name: str, model: dict[str, Any], prom: PrometheusProcess, start: float, end: float, out: Path) -> Path:
    panels = [p for p in model["panels"] if p["type"] in ("timeseries", "bargauge", "stat")]
    cols = 2
    rows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(14, 3.2 * rows), squeeze=False)
    for ax, panel in zip(axes.flat, panels, strict=False):
        ax.set_title(english(panel["title"]), fontsize=10)
        if panel["type"] == "timeseries":
            for target in panel["targets"]:
                series = query_range(prom, target["expr"], start, end, 5)
                for s in sorted(series, key=lambda s: -float(s["values"][-1][1]))[:8]:
                    xs = [(float(t) - start) / 60 for t, _ in s["values"]]
                    ys = [float(v) for _, v in s["values"]]
                    ax.plot(xs, ys, label=legend(target["legendFormat"], s["metric"]), linewidth=1.2)
            for step in panel["fieldConfig"]["defaults"].get("thresholds", {}).get("steps", [])[1:]:
                ax.axhline(step["value"], color=step["color"], linestyle="--", linewidth=0.8)
            ax.set_xlabel("minutes into the run", fontsize=8)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=7, loc="upper left")
        else:
            series = query_range(prom, panel["targets"][0]["expr"], end - 5, end, 5)
            points = sorted(((legend(panel["targets"][0]["legendFormat"], s["metric"]), float(s["values"][-1][1]))
                             for s in series if s["values"]), key=lambda p: -p[1])[:15]
            if points:
                ax.barh([p[0] or "value" for p in points][::-1], [p[1] for p in points][::-1], color="#3274d9")
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.suptitle(f"{english(model['title'])}: the board's queries over a {((end - start) / 60):.0f}-minute simulated run",
                 fontsize=12)
    fig.tight_layout()
    path = out / f"{name}.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=4.0)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "boards")
    parser.add_argument("--boards", default="overview,hazmat,air,pipeline")
    args = parser.parse_args()
    cfg = stack.StackConfig.from_env(root=REPO / ".stack")
    if not stack.status(cfg).all_running:
        print("the local stack is not running: `.venv/bin/cityops stack up`", file=sys.stderr)
        return 2
    suffix = uuid.uuid4().hex[:8]
    work = Path(tempfile.mkdtemp(prefix="cityops-render-"))
    data = yaml.safe_load((REPO / "topology.yaml").read_text())
    data["catalog"] = str(REPO / "catalog" / "dongguan_sensors.csv")
    for kind in data["kinds"].values():
        kind["topic"] = f"{kind['topic']}.render.{suffix}"
    data["topics"] |= {"alerts": f"city.alerts.render.{suffix}", "deadletter": f"city.deadletter.render.{suffix}"}
    (work / "topology.yaml").write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False))
    stack.ensure_topics(cfg.bootstrap, load_topology(work / "topology.yaml").all_topics())
    sink = ThreadingHTTPServer(("127.0.0.1", 0), _Sink)
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    port = free_port()
    env = {**os.environ, "CITYOPS_BOOTSTRAP": cfg.bootstrap, "CITYOPS_REDIS_URL": cfg.redis_url,
           "CITYOPS_APP_ID": f"cityops-render-{suffix}", "CITYOPS_NAMESPACE": f"render-{suffix}",
           "CITYOPS_WEB_PORT": str(port), "CITYOPS_DATA_DIR": str(work / "data"),
           "CITYOPS_CAP_URL": f"http://127.0.0.1:{sink.server_address[1]}/cap",
           "CITYOPS_WEBHOOK_URL": f"http://127.0.0.1:{sink.server_address[1]}/hook"}
    cityops = str(Path(sys.executable).with_name("cityops"))
    log = (work / "run.log").open("ab")
    worker = subprocess.Popen([cityops, "worker", "--topology", str(work / "topology.yaml"), "--loglevel", "warning"],
                              env=env, stdout=log, stderr=subprocess.STDOUT)
    prom = PrometheusProcess(work / "prometheus", [f"127.0.0.1:{port}"], free_port())
    sim = None
    try:
        prom.wait_ready()
        time.sleep(5)  # the worker joins its group
        sim = subprocess.Popen([cityops, "simulate", "--rate", "300", "--duration", str(args.minutes * 60 + 30),
                                "--seed", "7", "--topology", str(work / "topology.yaml")],
                               env=env, stdout=log, stderr=subprocess.STDOUT)
        start = time.time()
        time.sleep(args.minutes * 60)
        end = time.time()
        args.out.mkdir(parents=True, exist_ok=True)
        models = build_all()
        for name in args.boards.split(","):
            print(f"wrote {render(name, models[f'{name}.json'], prom, start, end, args.out)}")
    finally:
        for proc in (sim, worker):
            if proc is not None:
                proc.terminate()
                proc.wait(30)
        prom.stop()
        sink.shutdown()
        log.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

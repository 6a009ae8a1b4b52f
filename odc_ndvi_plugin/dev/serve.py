"""Serve outputs the way the ecosystem does: datacube-ows (WMS/WMTS/WCS) and datacube-explorer
(browse pages, STAC API) on loopback, over a datacube with the outputs indexed, plus a small
self-contained map page (no external tiles or scripts: these machines have no network).

Steps (:func:`serve`, ``odc-ndvi serve``):

1. the datacube: the user's configured one, or the workdir's own (``open_index``; it needs
   PostGIS, i.e. Debian's PostgreSQL: both services build PostGIS views);
2. the outputs indexed (idempotent): each run config's output product definition (its
   ``load`` grid read from the STAC items' ``proj:code`` / ``proj:transform``) and every
   ``*.stac-item.json`` under the output location, converted by odc-apps-dc-tools'
   ``stac_transform`` as ``fs-to-dc --stac`` does;
3. the OWS layer config (:mod:`odc_ndvi_plugin.ows`) written as JSON, then
   ``datacube-ows-update --schema`` and ``datacube-ows-update LAYERS`` (its materialised
   views and time/extent ranges) and ``cubedash-gen --init PRODUCTS`` (Explorer's summaries);
4. ``flask --app datacube_ows.wsgi run`` and ``cubedash-run`` on free 127.0.0.1 ports, and
   the map page, until Ctrl-C, which stops all of them.
"""

from __future__ import annotations

import contextlib
import html
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from .index import DatacubeEnv

__all__ = ["Served", "index_outputs", "output_products", "prepare_services", "serve"]

_LOG = logging.getLogger(__name__)
_STAC = ".stac-item.json"
_BIN = Path(sys.executable).parent


class ServeError(RuntimeError):
    """A service could not be prepared or started (the message names it)."""


# --------------------------------------------------------------------------------------------
# Outputs into the index
# --------------------------------------------------------------------------------------------


def _items(location: Path) -> list[Path]:
    return sorted(location.rglob(f"*{_STAC}"))


def _grid_of(item: dict[str, Any], path: Path) -> dict[str, Any]:
    """The product's ``load`` section from an item's projection (crs, resolution, align)."""
    props = item.get("properties", {})
    crs, transform = props.get("proj:code") or props.get("proj:epsg"), props.get("proj:transform")
    if not crs or not transform or len(transform) < 6:
        raise ServeError(f"{path}: no proj:code / proj:transform to take the product's grid from")
    if isinstance(crs, int):
        crs = f"EPSG:{crs}"
    rx, ry, x0, y0 = transform[0], transform[4], transform[2], transform[5]

    def number(v: float) -> float | int:
        return int(v) if float(v).is_integer() else float(v)

    return {
        "crs": str(crs),
        "resolution": {"y": number(ry), "x": number(rx)},
        "align": {"y": number(y0 % abs(ry)), "x": number(x0 % abs(rx))},
    }


def output_products(
    runs: Sequence[tuple[Any, dict[str, Any]]], location: Path
) -> list[dict[str, Any]]:
    """The output product definitions of ``runs`` (a run config's plugin and ``product``
    block) whose items are under ``location``, each with the grid of its items."""
    from ..product import output_product_definition

    items = _items(location)
    docs = []
    for plugin, product in runs:
        doc = output_product_definition(plugin, product)
        mine = [p for p in items if _item_product(p) == doc["name"]]
        if not mine:
            raise ServeError(f"no {_STAC} of product {doc['name']!r} under {location}")
        measurements = doc.pop("measurements")
        doc["load"] = _grid_of(json.loads(mine[0].read_text()), mine[0])
        doc["measurements"] = measurements
        docs.append(doc)
    return docs


def _item_product(path: Path) -> str | None:
    try:
        return json.loads(path.read_text()).get("properties", {}).get("odc:product")
    except (OSError, ValueError):
        return None


def index_outputs(
    env: DatacubeEnv, products: Sequence[dict[str, Any]], location: Path
) -> tuple[int, int]:
    """Add the product definitions and index their STAC items under ``location``
    (idempotent). Returns (datasets added, already indexed)."""
    import tempfile

    import yaml
    from datacube.index.hl import Doc2Dataset
    from odc.apps.dc_tools._stac import stac_transform

    from .index import add_products

    with tempfile.TemporaryDirectory() as tmp:
        defs = Path(tmp) / "products.yaml"
        defs.write_text(yaml.safe_dump_all(list(products), sort_keys=False))
        add_products(env, [defs])
    names = {p["name"] for p in products}
    added = present = 0
    with env.index() as index:
        # lineage (the input scenes) need not be in this index: fs-to-dc does the same
        resolve = Doc2Dataset(index, products=sorted(names), skip_lineage=True)
        for path in _items(location):
            item = json.loads(path.read_text())
            if item.get("properties", {}).get("odc:product") not in names:
                continue
            if index.datasets.has(item["id"]):
                present += 1
                continue
            dataset, err = resolve(stac_transform(item), path.absolute().as_uri())
            if dataset is None:
                raise ServeError(f"{path}: cannot index: {err}")
            index.datasets.add(dataset)
            added += 1
    _LOG.info("outputs: %d datasets added, %d already indexed", added, present)
    return added, present


# --------------------------------------------------------------------------------------------
# The services
# --------------------------------------------------------------------------------------------


def _service_env(env: DatacubeEnv, ows_cfg: Path) -> dict[str, str]:
    out = env.subprocess_env()
    out.pop("PYTHONDONTWRITEBYTECODE", None)
    out["DATACUBE_OWS_CFG"] = str(ows_cfg)
    out["PATH"] = f"{_BIN}:{out.get('PATH', '')}"
    return out


def _run(cmd: list[str], env: dict[str, str], what: str, timeout: float = 600) -> None:
    t0 = time.monotonic()
    proc = subprocess.run(
        cmd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-15:]
        raise ServeError(f"{what} failed (exit {proc.returncode}):\n  " + "\n  ".join(tail))
    _LOG.info("%s took %.1fs", what, time.monotonic() - t0)


def _ensure_postgis(env: DatacubeEnv) -> bool:
    """Refuse an index without PostGIS; True if the extension is (now) in the database."""
    import sqlalchemy
    from datacube.cfg import psql_url_from_config

    engine = sqlalchemy.create_engine(psql_url_from_config(env.odc_environment()))
    try:
        with engine.connect() as conn:
            available = conn.execute(
                sqlalchemy.text("SELECT 1 FROM pg_available_extensions WHERE name = 'postgis'")
            ).first()
            if available is None:
                raise ServeError(
                    f"the datacube at {env.display_url} has no PostGIS, which datacube-ows "
                    "and datacube-explorer need: install postgresql-15-postgis-3 "
                    "(scripts/bootstrap does) and start a new workdir, or point at a "
                    "PostGIS-enabled datacube"
                )
            try:
                conn.execute(sqlalchemy.text("CREATE EXTENSION IF NOT EXISTS postgis"))
                conn.commit()
            except sqlalchemy.exc.DBAPIError:  # not ours to create: the services try
                conn.rollback()
                return False
            return True
    finally:
        engine.dispose()


def prepare_services(env: DatacubeEnv, ows_cfg: Path, products: Sequence[str]) -> None:
    """OWS schema + ranges and Explorer's schema + summaries of ``products``, over what is
    indexed now (other products of the datacube are left to their own schedule)."""
    from concurrent.futures import ThreadPoolExecutor

    installed = _ensure_postgis(env)
    senv = _service_env(env, ows_cfg)

    def ows() -> None:
        _run([str(_BIN / "datacube-ows-update"), "--schema"], senv, "datacube-ows-update --schema")
        _run([str(_BIN / "datacube-ows-update"), *products], senv, "datacube-ows-update (ranges)")

    def explorer() -> None:
        _run([str(_BIN / "cubedash-gen"), "--init", *products], senv, "cubedash-gen --init")

    if not installed:  # both would try CREATE EXTENSION: one after the other
        ows()
        explorer()
        return
    # separate schemas (ows, cubedash): side by side
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(explorer)
        ows()
        pending.result()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url: str, proc: subprocess.Popen[bytes] | None, timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and proc.poll() is not None:
            tail = log.read_text(errors="replace").strip().splitlines()[-15:]
            raise ServeError(f"{url}: exited with {proc.returncode}:\n  " + "\n  ".join(tail))
        try:
            with urllib.request.urlopen(url, timeout=30) as resp:  # noqa: S310 - loopback
                resp.read()
                return
        except urllib.error.HTTPError:
            return  # it answers
        except OSError:
            if time.monotonic() > deadline:
                raise ServeError(f"{url} did not answer within {timeout:.0f}s; log {log}") from None
            time.sleep(0.3)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)


@dataclass
class Served:
    """Running services: their URLs (loopback) and what they serve."""

    ows: str
    """datacube-ows endpoint (``.../wms``, ``.../wcs``, ``.../wmts``), e.g. http://127.0.0.1:PORT"""
    explorer: str
    """datacube-explorer root; its STAC API is under ``/stac``."""
    map_page: str
    """The map page (GetMap images of every layer and style, with legends)."""
    products: list[dict[str, Any]] = field(default_factory=list)
    """The served output product definitions."""
    workdir: Path = Path(".")

    def text(self) -> str:
        names = ", ".join(p["name"] for p in self.products)
        return (
            f"Serving {names} on loopback (Ctrl-C stops):\n"
            f"  map page:  {self.map_page}\n"
            f"  OWS:       {self.ows}/wms?service=WMS&request=GetCapabilities&version=1.3.0\n"
            f"  WCS:       {self.ows}/wcs?service=WCS&request=GetCapabilities&version=2.0.1\n"
            f"  Explorer:  {self.explorer}/products/{self.products[0]['name']}\n"
            f"  STAC API:  {self.explorer}/stac/search?collections={self.products[0]['name']}"
        )


def _start(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as fh:
        return subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT, env=env,
            start_new_session=True, cwd=log.parent,
        )  # fmt: skip


@contextlib.contextmanager
def serve(
    env: DatacubeEnv,
    runs: Sequence[tuple[Any, dict[str, Any]]],
    location: Path,
    workdir: Path,
    *,
    progress: Callable[[str], None] = print,
    start_timeout: float = 180.0,
) -> Iterator[Served]:
    """Index the outputs of ``runs`` (each a run config's plugin and ``product`` block)
    found under ``location``, prepare and start both services and the map page in
    ``workdir``; stop them all on exit (also on Ctrl-C)."""
    from ..ows import ows_config

    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    progress("[1/4] outputs into the datacube")
    products = output_products(runs, location)
    added, present = index_outputs(env, products, location)
    progress(f"      {added} datasets added, {present} already indexed")
    ows_port, explorer_port, page_port = free_port(), free_port(), free_port()
    ows_url = f"http://127.0.0.1:{ows_port}"
    cfg_path = workdir / "ows_cfg.json"
    cfg_path.write_text(json.dumps(ows_config(products, url=ows_url + "/"), indent=1))
    progress(f"[2/4] datacube-ows ranges, Explorer summaries ({cfg_path})")
    prepare_services(env, cfg_path, [p["name"] for p in products])
    senv = _service_env(env, cfg_path)
    procs: list[subprocess.Popen[bytes]] = []
    server: ThreadingHTTPServer | None = None
    try:
        progress("[3/4] starting datacube-ows and datacube-explorer")
        ows_log, explorer_log = workdir / "ows.log", workdir / "explorer.log"
        procs.append(
            _start(
                [str(_BIN / "flask"), "--app", "datacube_ows.wsgi:application", "run",
                 "--host", "127.0.0.1", "--port", str(ows_port), "--with-threads"],
                senv, ows_log,
            )
        )  # fmt: skip
        explorer_url = f"http://127.0.0.1:{explorer_port}"
        procs.append(
            _start(
                [str(_BIN / "cubedash-run"), "--hostname", "127.0.0.1", "--port",
                 str(explorer_port), "--workers", "1"],
                senv, explorer_log,
            )
        )  # fmt: skip
        _wait_http(f"{ows_url}/ping", procs[0], start_timeout, ows_log)
        _wait_http(f"{explorer_url}/products", procs[1], start_timeout, explorer_log)
        progress("[4/4] map page")
        page_dir = workdir / "page"
        page_dir.mkdir(exist_ok=True)
        (page_dir / "index.html").write_text(map_page(env, products, ows_url))
        handler = partial(_QuietHandler, directory=str(page_dir))
        server = ThreadingHTTPServer(("127.0.0.1", page_port), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        yield Served(
            ows=ows_url,
            explorer=explorer_url,
            map_page=f"http://127.0.0.1:{page_port}/index.html",
            products=list(products),
            workdir=workdir,
        )
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()
        for proc in procs:
            _stop(proc)


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib name
        _LOG.debug("map page: " + format, *args)


# --------------------------------------------------------------------------------------------
# The map page
# --------------------------------------------------------------------------------------------


def _layer_views(env: DatacubeEnv, products: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per product: its times (task period starts), styles and EPSG:3857 bbox of its data."""
    from odc.geo.geom import Geometry

    views = []
    with env.datacube() as dc:
        for product in products:
            datasets = list(dc.find_datasets(product=product["name"]))
            if not datasets:
                continue
            extent = None
            for ds in datasets:
                geom = Geometry(ds.extent.geom, ds.extent.crs).to_crs("EPSG:3857")
                extent = geom if extent is None else extent.union(geom)
            assert extent is not None
            x0, y0, x1, y1 = extent.boundingbox
            times = sorted({ds.time.begin.strftime("%Y-%m-%d") for ds in datasets})
            views.append(
                {
                    "layer": product["name"],
                    "styles": [m["name"] for m in product["measurements"]],
                    "times": times,
                    "bbox": [x0, y0, x1, y1],
                }
            )
    return views


def map_page(env: DatacubeEnv, products: Sequence[dict[str, Any]], ows_url: str) -> str:
    """A self-contained HTML page: each layer's GetMap image (style and time chosen from
    lists) over its data's extent, with its GetLegendGraphic; plain JavaScript, nothing
    fetched but OWS images."""
    views = _layer_views(env, products)
    if not views:
        raise ServeError("no indexed outputs to show on the map page")
    data = json.dumps({"ows": ows_url, "views": views})
    title = html.escape(", ".join(v["layer"] for v in views))
    return _PAGE.replace("__TITLE__", title).replace("__DATA__", data)


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>__TITLE__</title>
<style>
 body { font: 14px sans-serif; margin: 12px; background: #fafafa; }
 #frame { position: relative; display: inline-block; border: 1px solid #444;
          background-image: linear-gradient(45deg, #ddd 25%, transparent 25%),
          linear-gradient(-45deg, #ddd 25%, transparent 25%);
          background-size: 16px 16px; }
 #map { display: block; }
 #legend { vertical-align: top; margin-left: 12px; }
 select { margin-right: 8px; }
 #status { color: #555; margin: 6px 0; }
</style></head>
<body>
<h3>__TITLE__</h3>
<div>layer <select id="layer"></select> band <select id="style"></select>
 period start <select id="time"></select></div>
<div id="status">loading...</div>
<div><span id="frame"><img id="map" alt="OWS GetMap"></span><img id="legend" alt="legend"></div>
<script>
const DATA = __DATA__;
const $ = (id) => document.getElementById(id);
function fill(sel, values) {
  sel.innerHTML = "";
  for (const v of values) { const o = document.createElement("option"); o.text = v; sel.add(o); }
}
function view() { return DATA.views[$("layer").selectedIndex]; }
function draw() {
  const v = view();
  const [x0, y0, x1, y1] = v.bbox;
  const width = 768, height = Math.max(1, Math.round(width * (y1 - y0) / (x1 - x0)));
  const q = new URLSearchParams({service: "WMS", version: "1.3.0", request: "GetMap",
    layers: v.layer, styles: $("style").value, crs: "EPSG:3857", bbox: v.bbox.join(","),
    width: width, height: height, format: "image/png", transparent: "true",
    time: $("time").value});
  $("status").textContent = "GetMap " + v.layer + " / " + $("style").value + " / " + $("time").value;
  $("map").onload = () => { $("status").textContent += " - drawn"; document.title = "drawn"; };
  $("map").onerror = () => { $("status").textContent += " - FAILED"; };
  $("map").src = DATA.ows + "/wms?" + q;
  $("legend").src = DATA.ows + "/wms?" + new URLSearchParams({service: "WMS", version: "1.3.0",
    request: "GetLegendGraphic", layer: v.layer, style: $("style").value, format: "image/png"});
}
fill($("layer"), DATA.views.map((v) => v.layer));
function pick() { fill($("style"), view().styles); fill($("time"), view().times); draw(); }
$("layer").onchange = pick; $("style").onchange = draw; $("time").onchange = draw;
const hash = new URLSearchParams(location.hash.slice(1));
pick();
if (hash.get("style")) { $("style").value = hash.get("style"); draw(); }
</script></body></html>
"""

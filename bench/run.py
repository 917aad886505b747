"""`make bench`: measure the project's numbers and write bench/results.json.

Metric names are the ones the issues give. Each metric records its value,
unit and how it was measured; peers named in an issue are measured in the
same run so that ratios hold on a noisy machine.
"""

import argparse
import json
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(1, str(ROOT / "lib"))

from host_tools.console import BoardLink  # noqa: E402
from host_tools.deploy import deploy  # noqa: E402
from host_tools.vboard import VirtualBoardProcess  # noqa: E402

HEAP_RE = re.compile(r"heap +([\d.]+) KB free, ([\d.]+) KB used")


def status_heap(link):
    """The app's own `status` heap line, read with the console open."""
    lines = []
    console = BoardLink(str(link), 115200)
    console.line_sink = lines.append
    try:
        seen = console.prompts()
        console.write(b"status\r")
        if not console.wait_prompt(seen, 10):
            raise RuntimeError("no answer to status")
    finally:
        console.close()
    for line in lines:
        m = HEAP_RE.search(line)
        if m:
            return float(m.group(1)), float(m.group(2))
    raise RuntimeError(f"no heap line in {lines}")


def bench_firmware_idle(results, work):
    with VirtualBoardProcess(work / "flash", work / "vb.tty") as vb:
        vb.channel.wait_kind("ready", timeout=20)
        # What the virtual board itself costs: ROM, machine/network stand-ins
        # and the raw REPL, which on a real board live in flash, not heap.
        out = subprocess.run(
            [str(Path(sys.executable).parent / "mpremote"), "connect", str(vb.link), "exec",
             "from vboard_rom import STANDINS\nprint(STANDINS)"],
            capture_output=True, text=True, check=True, timeout=60).stdout
        results["vboard_standin_heap_kb"] = metric(
            round(int(out.strip()) / 1024, 1), "KB",
            "heap the virtual board's own code holds before the firmware starts (ROM script, machine/network "
            "stand-ins, the link to the supervisor), 32-bit equivalent, from vboard_rom.STANDINS; charged to "
            "the board, not to the firmware's heap_kb (docs/virtual-board.md); absent on hardware")
        mark = vb.channel.mark()
        t0 = time.monotonic()
        deploy(str(vb.link), "virtual", out=lambda *_: None)
        results["deploy_full_s"] = metric(round(time.monotonic() - t0, 2), "s",
                                          "pgw deploy to an empty virtual board, all files copied")
        vb.channel.wait_kind("wdt", since=mark, timeout=20)
        # Idle: let the app settle past its healthy mark, then ask it.
        time.sleep(1.0)
        free, used = status_heap(vb.link)
        results["firmware_idle_heap_kb"] = metric(
            used, "KB", "heap in use by the idle firmware on the `virtual` board, after gc.collect(), "
            "console open, from the app's `status`; 32-bit equivalent (-X heapsize=..w)")
        results["firmware_idle_heap_free_kb"] = metric(free, "KB", "free heap at the same moment")
        t0 = time.monotonic()
        mark = vb.channel.mark()
        deploy(str(vb.link), "virtual", out=lambda *_: None)
        results["deploy_unchanged_s"] = metric(round(time.monotonic() - t0, 2), "s",
                                               "pgw deploy when every file's hash already matches")
        vb.channel.wait_kind("wdt", since=mark, timeout=20)
        mark = vb.channel.mark()
        vb.channel.power_cycle()
        boot = vb.channel.wait_kind("boot", since=mark, timeout=20)
        armed = vb.channel.wait_kind("wdt", since=mark, timeout=20)
        results["vboard_boot_to_app_ms"] = metric(
            round((armed["t"] - boot["t"]) * 1000, 1), "ms",
            "virtual board power-on to the app arming its watchdog (boot.py, main.py, imports)")


MICROPYTHON = Path(sys.executable).parent / "micropython"


def run_micropython(script, *args, heap_kb=160):
    """Run a bench script on the MicroPython unix port with a board-sized heap."""
    out = subprocess.run([str(MICROPYTHON), "-X", f"heapsize={heap_kb}wK", str(ROOT / "bench" / script),
                          str(ROOT / "lib"), *map(str, args)],
                         capture_output=True, text=True, check=True, timeout=300).stdout
    return {k: float(v) for k, v in (line.split() for line in out.splitlines() if line.strip())}


def bench_push_decrypt(results):
    best = min(run_micropython("mp_push_decrypt.py", 100)["ms_per_push"] for _ in range(3))
    results["dlms_push_gcm_decrypt_ms_micropython"] = metric(
        round(best, 3), "ms",
        "decrypt (AES-128-GCM, tag verified) and decode one ~200-byte general-glo-ciphered "
        "Data-Notification on the MicroPython unix port; best of 3 runs of 100 pushes (goal <= 20)")


def bench_dlms_profile(results):
    sys.path.insert(0, str(ROOT / "bench"))
    import dlms_profile as dp

    frames = dp.record_profile()  # a real session with the gurux-dlms meter simulator
    results["dlms_profile_1000_decode_ms_micropython"] = metric(
        dp.micropython_profile(frames)["profile_ms"], "ms",
        "1,000-row load profile (LLS, 512-byte HDLC frames, 1024-byte PDU, block transfer) replayed "
        "through lib/dlms (HDLC, blocks, A-XDR streaming) on the MicroPython unix port, .mpy, best of 3")
    results["dlms_profile_1000_decode_ms_gurux_cpython"] = metric(
        round(dp.gurux_parse_ms(frames), 1), "ms",
        "the same meter frames parsed by gurux-dlms's GXDLMSClient (getData + updateValue) on CPython")
    heap = dp.peak_heap(frames)
    results["dlms_profile_1000_peak_heap_kb"] = metric(
        round((heap["min_heap"] - heap["idle"]) / 1024, 1), "KB",
        "smallest -X heapsize the whole session survives (bisected) minus the heap in use when "
        "associated and idle, 32-bit equivalent; the modules run from a ROMFS image, as the firmware "
        "does; includes fragmentation (goal <= 16)")
    results["dlms_profile_1000_stream_headroom_kb"] = metric(
        round(heap["stream_peak"] / 1024, 1), "KB",
        "free heap the stream needs above idle when it has a free block to itself (bisected ballast)")
    results["dlms_client_import_heap_kb"] = metric(
        round(dp.import_heap()["ours"] / 1024, 1), "KB",
        "heap taken by importing dlms acse+apdu+client from a ROMFS image, 32-bit equivalent")


def bench_hdlc_line(results, work):
    sys.path.insert(0, str(ROOT / "bench"))
    import dlms_line

    m = dlms_line.measure(work)
    results["hdlc_link_efficiency"] = metric(
        round(m["efficiency"], 3), "ratio",
        "information-field bytes over line bytes (flags, addresses, control, HCS, FCS included), both "
        "directions, for a whole 1,000-row profile session (LLS, the negotiated 512-byte frames) read by "
        "the firmware on a virtual board from the gurux-dlms simulator through the RS-485 pty paced at "
        f"9600 baud; {m['line_bytes']} line bytes in {m['frames']} frames (goal >= 0.85)")
    results["dlms_profile_1000_read_s_9600"] = metric(
        round(m["profile_read_ms"] / 1000, 1), "s",
        "the same profile read's time on the board, GET to the last row, at 9600 baud")


def bench_es256(results):
    sys.path.insert(0, str(ROOT / "bench"))
    import es256

    runs = es256._runs()
    mp = es256.micropython_ms(runs)
    results["es256_sign_ms_micropython"] = metric(
        mp["sign"], "ms", "lib/p256.py sign_digest (RFC 6979 nonce, comb table built) on the MicroPython "
        "unix port at the 160 KB board heap; best of 3 runs of 5 rounds x 40 signatures (goal <= 1.5)")
    results["es256_verify_ms_micropython"] = metric(
        mp["verify"], "ms", "lib/p256.py verify_digest, same conditions (goal <= 4)")
    results["es256_table_build_ms_micropython"] = metric(
        mp["table_build_ms"], "ms", "building the signing table, once per boot")
    results["es256_sign_ms_python_ecdsa"] = metric(
        es256.python_ecdsa_sign_ms(), "ms", "python-ecdsa 0.19.2 sign_digest_deterministic on CPython (peer)")
    results["es256_sign_ms_openssl"] = metric(
        es256.openssl_sign_ms(), "ms", "cryptography 50 (OpenSSL) ECDSA P-256/SHA-256 sign on CPython (peer)")
    results["es256_table_bytes"] = metric(
        es256.table_bytes(), "bytes", "the fixed-base table as stored: 128 affine points x 64 bytes (goal <= 8192)")
    results["signed_reading_bytes"] = metric(
        es256.signed_reading_bytes(), "bytes",
        "a READING as COSE_Sign1/ES256 (docs/protocol.md) with seq and registers near 2**32, 15-min "
        "interval, 8-byte meter serial (goal <= 128)")
    results["signed_reading_bytes_json_jws"] = metric(
        es256.signed_reading_bytes_json_jws(), "bytes",
        "the same reading as a JSON object in a compact JWS (ES256, alg + kid header), for comparison")


def bench_gateway_heap(results):
    # Issue 5, acceptance 4: the day scenario's smallest heap and its drift.
    from bench.gateway_heap import measure

    for name, (value, how) in measure(log=lambda line: print(line, flush=True)).items():
        results[name] = metric(value, "KB", how)


def bench_market(results):
    # Issue 6: clearing one interval's book on the hub.
    from bench.market_clear import run

    results["market_clear_10k_orders_ms"] = metric(
        run()["market_clear_10k_orders_ms"], "ms",
        "host_tools/hub/market.py clear() of 10,000 seeded step orders (about 45,000 tranches, 5,000 buys and "
        "5,000 sells) with binding connection caps and a feeder limit, on CPython; median of 7 (goal <= 100)")


def bench_hub_ingest(results):
    # Issue 6: the hub's end-to-end ingest, and Mosquitto alone as the peer, in one run.
    from bench.hub_ingest import run

    r = run()
    results["hub_ingest_readings_per_s"] = metric(
        r["hub_ingest_readings_per_s"], "1/s", "signed READINGs checked (ES256), stored (SQLite WAL, "
        "synchronous=FULL) and ACKed by the hub, through Mosquitto: " + r["how"] + " (goal >= 5000)")
    results["broker_raw_msgs_per_s"] = metric(
        r["broker_raw_msgs_per_s"], "1/s", "the same publishers and messages to one paho subscriber, no hub (peer)")


def bench_ledger_verify(results):
    # Issue 6: pgw ledger verify over a real hub database, and over its export.
    from bench.ledger_verify import run

    r = run()
    results["ledger_verify_blocks_per_s"] = metric(
        r["ledger_verify_blocks_per_s"], "1/s", "host_tools/hub/audit.verify_db (signatures, chain, membership, "
        "committees, quorums, settlement re-run): " + r["how"])
    results["ledger_verify_export_blocks_per_s"] = metric(
        r["ledger_verify_export_blocks_per_s"], "1/s", "verify_export over the same ledger's pgw-ledger/1 export")


def bench_ota_bundle(results):
    # Issue 7: the gateway's update bundle and the heap verifying it takes.
    from bench.ota_bundle import measure

    r = measure()
    h = r["heap_bytes"]
    results["ota_bundle_kb"] = metric(
        r["ota_bundle_kb"], "KB", "the virtual board's bundle from `pgw ota build` (host_tools/ota.py): manifest "
        f"({r['manifest_bytes']} bytes), index ({r['index_bytes']} bytes, {r['files']} files), ROMFS image")
    results["ota_verify_peak_heap_kb"] = metric(
        r["ota_verify_peak_heap_kb"], "KB",
        "lib/ota's reader verifying that bundle on the MicroPython unix port, fed 1 KB chunks from a file, sink "
        "hashing only, modules from a ROMFS image: the smallest -X heapsize (32-bit equivalent, 256-byte steps) "
        f"in which it verifies ({h['verify']}) minus the smallest in which the same script runs without making "
        f"the reader ({h['baseline']}: modules, sink, chunk buffer, open file). Mostly p256's 8 KB comb table "
        "and building it, on first use by the signature check; whether it finds a free block is not monotonic in "
        f"the heap size: every heap from {h['verify_every']} up verifies ({r['ota_verify_peak_heap_every_kb']} KB "
        f"above the baseline). The reader object with its 1 KB buffer holds {r['reader_object_bytes']} bytes")
    results["ota_verify_headroom_kb"] = metric(
        r["ota_verify_headroom_kb"], "KB",
        "the same verification with p256's table already built (a gateway that signs has it): the smallest "
        "free heap (one block, 32-bit equivalent) it completes in, the rest of a large heap filled with ballast")


def bench_ota_transfer(results):
    # Issue 7: an update's download to a virtual board over Mosquitto on loopback.
    from bench.ota_transfer import measure

    with tempfile.TemporaryDirectory(prefix="pgw-bench-ota-") as tmp:
        r = measure(Path(tmp))
    results["ota_transfer_kb_per_s"] = metric(
        r["ota_transfer_kb_per_s"], "KB/s",
        f"the virtual board's {r['bundle_bytes']:,}-byte bundle, offered with `pgw ota publish` to `pgw hub "
        "--release-key` on Mosquitto (loopback), downloaded by the gateway a window of 4 chunks of 1 KB at a time "
        "and checked as it streams (signature, SHA-256 of every byte) into its other ROM slot: from its "
        f"'announced' line to its 'checked and staged' line ({r['seconds']} s, {r['chunk_requests']} requests "
        "served); the switch and trial not included (bench/ota_transfer.py)")


def metric(value, unit, how):
    return {"value": value, "unit": unit, "how": how}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results.json"))
    args = parser.parse_args(argv)
    results = {}
    with tempfile.TemporaryDirectory(prefix="pgw-bench-") as tmp:
        bench_firmware_idle(results, Path(tmp))
    with tempfile.TemporaryDirectory(prefix="pgw-bench-") as tmp:
        bench_hdlc_line(results, Path(tmp))
    bench_push_decrypt(results)
    bench_dlms_profile(results)
    bench_es256(results)
    bench_market(results)
    bench_hub_ingest(results)
    bench_ledger_verify(results)
    bench_ota_bundle(results)
    bench_ota_transfer(results)
    bench_gateway_heap(results)
    doc = {
        "machine": {"python": platform.python_version(), "platform": platform.platform(),
                    "cpus": __import__("os").cpu_count()},
        "metrics": results,
    }
    Path(args.out).write_text(json.dumps(doc, indent=2) + "\n")
    for name, m in results.items():
        print(f"{name:32} {m['value']:>10} {m['unit']}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

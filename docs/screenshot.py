"""Screenshot of a run's report.html in headless Chromium, shrunk to a small palette PNG for the README.

    .venv/bin/python docs/screenshot.py outputs/demo/report.html docs/report_demo.png
"""
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from PIL import Image


def main(report: str, out: str, width: int = 1200, height: int = 1480) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if not chromium:
        sys.exit("needs Chromium: apt-get install chromium")
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw.png"
        subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                        "--disable-background-networking", "--disable-component-update", "--disable-sync",
                        f"--user-data-dir={tmp}/profile", f"--window-size={width},{height}", "--hide-scrollbars",
                        "--virtual-time-budget=5000", f"--screenshot={raw}", Path(report).resolve().as_uri()],
                       check=True, capture_output=True, timeout=120)
        img = Image.open(raw).convert("RGB")
        img = img.resize((img.width * 3 // 4, img.height * 3 // 4), Image.LANCZOS)
        img.quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(out, optimize=True)
    print(f"wrote {out} ({Path(out).stat().st_size // 1024} kB)")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])

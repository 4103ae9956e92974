"""After a failed `make test`: name the failing tests and show the end of the logs kept for
them, so a red CI run says why without a rerun. Reads the JUnit report and the artifacts
dir that `make test` writes; prints a bounded amount."""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
JUNIT = ROOT / "build/test-results/junit.xml"
ARTIFACTS = ROOT / "build/test-artifacts"
TAIL_LINES = 40
MAX_LOGS = 12


def failing_tests() -> list[tuple[str, str]]:
    if not JUNIT.exists():
        return []
    failed = []
    for case in ET.parse(JUNIT).iter("testcase"):
        for kind in ("failure", "error"):
            el = case.find(kind)
            if el is not None:
                name = f"{case.get('classname')}::{case.get('name')}"
                first = (el.get("message") or "").strip().splitlines()[:1]
                failed.append((name, f"{kind}: {first[0][:300] if first else ''}"))
    return failed


def tail(path: Path, lines: int) -> str:
    with path.open("rb") as f:
        f.seek(max(0, path.stat().st_size - 64 * 1024))
        return "\n".join(f.read().decode(errors="replace").splitlines()[-lines:])


def main() -> None:
    failed = failing_tests()
    print(f"\n===== {len(failed)} failing test(s) =====")
    for name, why in failed:
        print(f"FAILED {name}\n    {why}")
    if not JUNIT.exists():
        print(f"(no JUnit report at {JUNIT}: the run failed before pytest ended)")
    logs = sorted(ARTIFACTS.glob("**/*.log"))
    for path in logs[:MAX_LOGS]:
        print(f"\n----- {path.relative_to(ROOT)} (last {TAIL_LINES} lines) -----")
        print(tail(path, TAIL_LINES))
    if len(logs) > MAX_LOGS:
        print(f"\n({len(logs) - MAX_LOGS} more logs under {ARTIFACTS})")
    for path in sorted(ARTIFACTS.glob("chaos-*.json")):
        print(f"\n----- {path.relative_to(ROOT)} -----\n{tail(path, 200)}")


if __name__ == "__main__":
    sys.exit(main())

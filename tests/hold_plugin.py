"""A pytest plugin for the interrupted-run test: the benchmark run it is loaded into (`-p hold_plugin`)
stops before its second test and waits there until it is interrupted. So the Ctrl-C provably lands
while the run is still running, with one benchmark finished, on a fast machine and a slow one alike."""

import time

import pytest

HOLDING = "hold_plugin: holding before the second test"
_passed = []
HOLD_SECONDS = 300


def pytest_runtest_logreport(report):
    if report.when == "call" and report.passed:
        _passed.append(report.nodeid)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    if not _passed:
        return
    capture = item.config.pluginmanager.get_plugin("capturemanager")
    with capture.global_and_fixture_disabled():  # past pytest's capture, to the run's real stdout
        print(HOLDING, flush=True)
    deadline = time.monotonic() + HOLD_SECONDS
    while time.monotonic() < deadline:  # until SIGINT raises KeyboardInterrupt here
        time.sleep(0.05)
    pytest.exit(f"hold_plugin: not interrupted within {HOLD_SECONDS} s", returncode=3)  # never hang CI

import json
import subprocess
import sys

from jaxrepro import cli


def test_info_writes_documented_fields(tmp_path, capsys):
  out = tmp_path / "info.json"
  assert cli.main(["info", "--json", str(out)]) == 0
  info = json.loads(out.read_text())
  assert set(info) >= {"jax", "backend", "device_count", "process_count", "devices"}
  assert info["device_count"] == len(info["devices"]) >= 1
  assert "backend" in capsys.readouterr().out


def test_bench_lists_and_rejects_unknown(tmp_path, capsys):
  assert cli.main(["bench", "--list"]) == 0
  capsys.readouterr()
  assert cli.main(["bench", "surely_not_a_benchmark", "--out", str(tmp_path)]) == 2
  assert "unknown benchmark" in capsys.readouterr().err


def test_help_and_console_script():
  proc = subprocess.run([sys.executable, "-m", "jaxrepro.cli", "--help"], capture_output=True,
                        text=True, timeout=120)
  assert proc.returncode == 0 and "bench" in proc.stdout and "info" in proc.stdout


def test_family_registration_through_entry_points(monkeypatch):
  calls = []

  class FakeEntry:
    name = "fake"
    def load(self):
      def register(subparsers):
        p = subparsers.add_parser("fake")
        p.add_argument("--x", type=int)
        p.set_defaults(func=lambda args: calls.append(args.x) or 7)
      return register

  monkeypatch.setattr(cli.metadata, "entry_points", lambda group: [FakeEntry()])
  assert cli.main(["fake", "--x", "3"]) == 7
  assert calls == [3]


def test_bad_input_is_a_clear_error_not_a_traceback(monkeypatch, capsys):
  class FakeEntry:
    name = "boom"
    def load(self):
      def register(subparsers):
        p = subparsers.add_parser("boom")
        p.set_defaults(func=lambda args: (_ for _ in ()).throw(ValueError("bad --budget")))
      return register
  monkeypatch.setattr(cli.metadata, "entry_points", lambda group: [FakeEntry()])
  assert cli.main(["boom"]) == 2
  assert "bad --budget" in capsys.readouterr().err

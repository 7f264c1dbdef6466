"""device="auto" and explicit device=/backend= over probe answers (selection.choose), for the
machines phirt targets: an NVIDIA GPU (Jetson), an Intel AI PC (GPU + NPU), Apple silicon, and
nothing but the CPU. The answers are what each backend's probe gives on such a machine; the probe
layer itself is exercised with injected device lists (never inference on a device that is not
here)."""

from __future__ import annotations

import pytest

from phirt.backends.base import CPU, GPU, NPU, Device, Probe
from phirt.backends.selection import choose, probe_all
from phirt.errors import UnsupportedError

CPU_DEV = Device("cpu", CPU, "cpu")
CUDA = Device("cuda", GPU, "cuda")
METAL = Device("metal", GPU, "metal")
OV_CPU, OV_GPU, OV_NPU = (
    Device("CPU", CPU, "cpu"),
    Device("GPU.0", GPU, "gpu"),
    Device("NPU", NPU, "npu"),
)
LLAMA_CPU = Device("cpu", CPU, "cpu", named_only=True)


def yes(backend: str, device: Device) -> Probe:
    return Probe(backend, device, True, f"{backend} runs it on {device.name}")


def no(backend: str, device: Device | None, why: str, convert: str | None = None) -> Probe:
    return Probe(backend, device, False, why, convert)


def gguf_on_jetson() -> list[Probe]:
    return [
        yes("native", CPU_DEV),
        yes("llamacpp", CUDA),
        yes("llamacpp", LLAMA_CPU),
        no("ortgenai", None, "reads ONNX Runtime GenAI folders only"),
        no("openvino", None, "openvino-genai is not installed"),
        no("mlx", CPU_DEV, "reads mlx-lm folders, not GGUF", convert="mlx"),
    ]


def onnx_on_jetson() -> list[Probe]:
    return [
        no("native", CPU_DEV, "phirt's native loader cannot read it"),
        no("llamacpp", None, "reads GGUF files only"),
        yes("ortgenai", CUDA),
        no("ortgenai", Device("qnn", NPU, "qnn"), "provider qnn did not load the model"),
        yes("ortgenai", CPU_DEV),
    ]


def ir_on_ai_pc() -> list[Probe]:
    return [
        no("native", CPU_DEV, "phirt's native loader cannot read it"),
        no("llamacpp", None, "reads GGUF files only"),
        no("ortgenai", None, "reads ONNX Runtime GenAI folders only"),
        yes("openvino", OV_CPU),
        yes("openvino", OV_GPU),
        yes("openvino", OV_NPU),
    ]


def phi3_gguf_on_ai_pc() -> list[Probe]:
    return [
        yes("native", CPU_DEV),
        no("llamacpp", None, "llama-cpp-python is not installed"),
        no("openvino", None, "its GGUF reader refuses architecture 'phi3'"),
    ]


def gguf_on_mac(llamacpp_metal: bool) -> list[Probe]:
    probes = [yes("native", CPU_DEV), no("mlx", METAL, "reads mlx-lm folders", convert="mlx")]
    if llamacpp_metal:
        probes += [yes("llamacpp", METAL), yes("llamacpp", LLAMA_CPU)]
    return probes


def gguf_on_plain_cpu() -> list[Probe]:
    return [
        yes("native", CPU_DEV),
        yes("llamacpp", LLAMA_CPU),
        no("ortgenai", None, "reads ONNX Runtime GenAI folders only"),
        yes("openvino", OV_CPU),
        no("mlx", CPU_DEV, "reads mlx-lm folders, not GGUF", convert="mlx"),
    ]


# -- CUDA present --------------------------------------------------------------------------------


def test_cuda_gguf_goes_to_llamacpp_on_the_gpu() -> None:
    s = choose(gguf_on_jetson(), "m.gguf")
    assert (s.backend, s.device, s.convert) == ("llamacpp", CUDA, None)
    assert "native: could run it on cpu, but GPU ranks higher" in s.reason
    assert "mlx: reads mlx-lm folders, not GGUF (device='auto' converts only" in s.reason


def test_cuda_onnx_folder_goes_to_ortgenai_cuda() -> None:
    s = choose(onnx_on_jetson(), "m/")
    assert (s.backend, s.device) == ("ortgenai", CUDA)
    assert "native: phirt's native loader cannot read it" in s.reason


def test_cuda_explicit_cpu_keeps_native() -> None:
    s = choose(gguf_on_jetson(), "m.gguf", device="cpu")
    assert (s.backend, s.device) == ("native", CPU_DEV)
    assert "device='cpu' requested" in s.reason


def test_cuda_explicit_backend_on_the_cpu() -> None:
    s = choose([p for p in gguf_on_jetson() if p.device != CUDA], "m.gguf", backend="llamacpp")
    assert (s.backend, s.device) == ("llamacpp", LLAMA_CPU)


# -- Intel GPU + NPU -----------------------------------------------------------------------------


def test_intel_ai_pc_prefers_gpu_then_npu_then_cpu() -> None:
    probes = ir_on_ai_pc()
    assert choose(probes, "ir/").device == OV_GPU
    assert choose([p for p in probes if p.device != OV_GPU], "ir/").device == OV_NPU
    assert choose(probes, "ir/", device="npu").device == OV_NPU
    assert choose(probes, "ir/", device="GPU.0").device == OV_GPU
    assert choose(probes, "ir/", device="cpu").device == OV_CPU


def test_intel_ai_pc_phi3_gguf_falls_back_to_native_and_says_why() -> None:
    s = choose(phi3_gguf_on_ai_pc(), "phi3.gguf")
    assert s.backend == "native"
    assert "openvino: its GGUF reader refuses architecture 'phi3'" in s.reason
    with pytest.raises(UnsupportedError, match="refuses architecture 'phi3'"):
        choose(phi3_gguf_on_ai_pc(), "phi3.gguf", backend="openvino")


# -- Apple silicon -------------------------------------------------------------------------------


def test_mac_gguf_prefers_llamacpp_metal_over_a_conversion() -> None:
    s = choose(gguf_on_mac(llamacpp_metal=True), "m.gguf")
    assert (s.backend, s.device, s.convert) == ("llamacpp", METAL, None)


def test_mac_gguf_without_llamacpp_converts_for_mlx() -> None:
    s = choose(gguf_on_mac(llamacpp_metal=False), "m.gguf")
    assert (s.backend, s.device, s.convert) == ("mlx", METAL, "mlx")
    assert "phirt converts it to mlx first" in s.reason


def test_mac_no_convert_keeps_native() -> None:
    s = choose(gguf_on_mac(llamacpp_metal=False), "m.gguf", convert=False)
    assert s.backend == "native"
    with pytest.raises(UnsupportedError, match="backend='mlx'"):
        choose(gguf_on_mac(llamacpp_metal=False), "m.gguf", backend="mlx", convert=False)


def test_mac_metal_request() -> None:
    assert choose(gguf_on_mac(llamacpp_metal=True), "m.gguf", device="metal").backend == "llamacpp"


# -- nothing present -----------------------------------------------------------------------------


def test_plain_cpu_native_wins_and_every_other_backend_is_named() -> None:
    s = choose(gguf_on_plain_cpu(), "m.gguf")
    assert (s.backend, s.device) == ("native", CPU_DEV)
    assert "llamacpp: llamacpp runs it on cpu: runs on the CPU only when backend='llamacpp'" in (
        s.reason
    )
    assert "openvino: could run it on the CPU, but phirt native is preferred there" in s.reason
    assert "ortgenai: reads ONNX Runtime GenAI folders only" in s.reason


def test_plain_cpu_asking_for_a_gpu_is_an_error_naming_each_backend() -> None:
    probes = [p for p in gguf_on_plain_cpu() if p.device is None or p.device.matches("gpu")]
    with pytest.raises(UnsupportedError, match="device='gpu'") as err:
        choose(probes, "m.gguf", device="gpu")
    assert "ortgenai: reads ONNX Runtime GenAI folders only" in str(err.value)


def test_named_only_device_never_wins_auto() -> None:
    probes = [no("native", CPU_DEV, "unsupported architecture 'zeta'"), yes("llamacpp", LLAMA_CPU)]
    with pytest.raises(UnsupportedError, match="only when backend='llamacpp'"):
        choose(probes, "zeta.gguf")
    assert choose(probes, "zeta.gguf", backend="llamacpp").backend == "llamacpp"


# -- the probe layer, with injected device lists -------------------------------------------------


def test_probe_layer_with_an_injected_intel_gpu_and_npu(models) -> None:
    """OpenVINO's real probe on files it reads or refuses, on devices this machine lacks."""
    pytest.importorskip("openvino_genai")
    devices = {"openvino": [OV_CPU, OV_GPU, OV_NPU]}
    phi3 = str(models.phi3("Q4_0"))
    probes = probe_all(phi3, backends=["native", "openvino"], devices=devices)
    assert [p.backend for p in probes] == ["native", "openvino"]
    assert "architecture 'phi3'" in probes[1].reason and probes[1].device is None
    assert choose(probes, phi3).backend == "native"


def test_probe_layer_injected_gpu_accepts_a_readable_gguf() -> None:
    pytest.importorskip("openvino_genai")
    from smollm2 import smollm2_path

    path = str(smollm2_path())
    devices = {"openvino": [OV_CPU, OV_GPU, OV_NPU]}
    probes = probe_all(path, backends=["native", "openvino"], devices=devices)
    ok = [(p.backend, p.device.name) for p in probes if p.ok and p.device]
    assert ok == [
        ("native", "cpu"),
        ("openvino", "CPU"),
        ("openvino", "GPU.0"),
        ("openvino", "NPU"),
    ]
    s = choose(probes, path)
    assert (s.backend, s.device) == ("openvino", OV_GPU)
    assert choose(probes, path, device="npu").device == OV_NPU


def test_probe_layer_device_filter_and_missing_devices(models) -> None:
    path = str(models.llama("Q4_0"))
    probes = probe_all(path, "npu", backends=["native"])
    assert not probes[0].ok and "no device matches device='npu'" in probes[0].reason


def test_import_phirt_needs_no_vendor_package() -> None:
    import subprocess
    import sys

    code = (
        "import sys, phirt, phirt.backends, phirt.runtime, phirt.cli; "
        "vendor = {'llama_cpp', 'onnxruntime_genai', 'openvino', 'openvino_genai', 'mlx', 'mlx_lm'}; "
        "print(sorted(vendor & {m.split('.')[0] for m in sys.modules}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_a_broken_vendor_stack_is_an_answer_not_a_crash(models, monkeypatch) -> None:
    """A stack that raises while listing devices or probing (a broken install, a driver error)
    is reported, and the others still run the model."""
    import phirt
    from phirt.backends import get_backend

    def boom(*args, **kwargs):
        raise RuntimeError("driver exploded\nwith two lines")

    if get_backend("llamacpp").version() is None:
        pytest.skip("llama-cpp-python is not installed")
    llamacpp = get_backend("llamacpp")
    path = str(models.llama("Q4_0"))
    monkeypatch.setattr(llamacpp, "devices", boom)
    probes = probe_all(path, backends=["native", "llamacpp"])
    assert probes[1].reason == "its stack failed to list devices: driver exploded with two lines"
    monkeypatch.setattr(llamacpp, "devices", lambda: [LLAMA_CPU])
    monkeypatch.setattr(llamacpp, "probe", boom)
    probes = probe_all(path, backends=["native", "llamacpp"])
    assert probes[1].reason.startswith("its probe failed: driver exploded")
    model = phirt.load(path, device="cpu")
    assert model.backend == "native"

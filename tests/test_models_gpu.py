"""The zoo on a CUDA GPU: same outputs as on the CPU (FP32, TF32 off), cached decoding and beam=1 hold."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from edgefuse.models import zoo  # noqa: E402

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def _inputs(batch: int, length: int, device: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    pixels = torch.rand(batch, 3, 64, 64, generator=g) * 2 - 1
    ids = torch.randint(5, 100, (batch, length), generator=g)
    mask = torch.ones(batch, length, dtype=torch.long)
    mask[-1, length // 2:] = 0
    return pixels.to(device), ids.to(device), mask.to(device)


@pytest.fixture(autouse=True)
def _no_tf32():
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


@pytest.mark.parametrize("name", zoo.list_models())
def test_cuda_matches_cpu(name):
    cpu = zoo.build_model(name)
    gpu = zoo.build_model(name).cuda()
    with torch.no_grad():
        ref = cpu(*_inputs(4, 11, "cpu"))
        got = gpu(*_inputs(4, 11, "cuda"))
    for k in ref:
        assert (got[k].cpu() - ref[k]).abs().max().item() < 1e-4, k


def test_cuda_caption_cache_and_beams():
    model = zoo.build_model("museum-caption").cuda()
    pixels, ids, mask = _inputs(3, 9, "cuda")
    mask[:] = 1
    with torch.no_grad():
        full = model(pixels, ids, mask)["caption_logits"]
        image = model.encode_image(pixels)
        pk, pv = model.empty_cache(3, image)
        steps = []
        for t in range(9):
            logits, pk, pv = model.decode_step(ids[:, t:t + 1], image, pk, pv)
            steps.append(logits)
    assert (torch.cat(steps, 1) - full).abs().max().item() < 1e-4
    assert torch.equal(model.generate(pixels, max_length=10), model.generate(pixels, max_length=10, num_beams=1))
    assert torch.equal(model.generate(pixels, max_length=10).cpu(),
                       zoo.build_model("museum-caption").generate(pixels.cpu(), max_length=10))

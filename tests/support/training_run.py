"""A real, short GAN training run that saves a checkpoint series, for tests of geometry over a training run.

Example::

    paths = train_checkpoints(tmp_path / "ckpts", steps=(40, 80, 120, 160))   # ckpt-40.tar, ..., ckpt-160.tar
    G = load_generator("dcgan-faces", weights=str(paths[0]))

The generator is the ``dcgan-faces`` architecture (``gan_face_generate``'s DCGAN, 100-d
latent, 64x64 RGB), trained against a small conv discriminator on synthetic images
(soft coloured Gaussian blobs on a plain background) made here from ``seed``: no
downloads, no files read. Each checkpoint is ``{"netG_state_dict": state dict}`` saved
with ``torch.save``, tensors only, so the loader's ``torch.load(weights_only=True)``
reads it. The same call on one machine writes the same files.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch
from torch import nn

__all__ = ["blob_images", "train_checkpoints"]

_NZ, _NGF, _SIZE = 100, 64, 64
_N_IMAGES = 256
# Fixed, so the caller's thread count cannot change the sums' order (and the files). One thread: on a
# shared 2-core machine two OpenMP threads took 3x the CPU time and 2-3x the wall time (spin-waiting).
_THREADS = 1


def blob_images(n: int, generator: torch.Generator) -> torch.Tensor:
    """``(n, 3, 64, 64)`` images in [-1, 1]: one or two soft coloured Gaussian blobs on a plain background."""
    coords = torch.arange(_SIZE, dtype=torch.float32)
    yy, xx = coords.view(1, _SIZE, 1), coords.view(1, 1, _SIZE)
    images = torch.rand(n, 3, 1, 1, generator=generator).mul(0.6).sub(0.9).expand(n, 3, _SIZE, _SIZE).clone()
    two = torch.rand(n, generator=generator) < 0.5
    for k in range(2):
        centre = torch.rand(n, 2, generator=generator) * (_SIZE - 16) + 8
        sigma = torch.rand(n, generator=generator) * 8 + 4
        colour = torch.rand(n, 3, 1, 1, generator=generator) * 2 - 1
        r2 = (yy - centre[:, 0].view(n, 1, 1)) ** 2 + (xx - centre[:, 1].view(n, 1, 1)) ** 2
        alpha = torch.exp(-r2 / (2 * sigma.view(n, 1, 1) ** 2)).unsqueeze(1)
        if k == 1:
            alpha = alpha * two.view(n, 1, 1, 1)
        # A convex blend of colours in [-1, 1] stays in [-1, 1].
        images = images * (1 - alpha) + colour * alpha
    return images


def _discriminator() -> nn.Module:
    """64 -> 32 -> 16 -> 8 -> 4 with 16/32/64/128 channels, then one logit: far cheaper than the generator."""
    layers: list[nn.Module] = []
    channels = [3, 16, 32, 64, 128]
    for c_in, c_out in zip(channels, channels[1:]):
        layers += [nn.Conv2d(c_in, c_out, 4, 2, 1), nn.LeakyReLU(0.2)]
    layers.append(nn.Conv2d(channels[-1], 1, 4, 1, 0))
    return nn.Sequential(*layers, nn.Flatten(0))


def _dcgan_init(m: nn.Module) -> None:
    """The DCGAN paper's init, as in the PyTorch tutorial the ``dcgan-faces`` weights were trained with."""
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(m.weight, 0.0, 0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.BatchNorm2d):
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


def _check_steps(steps: Iterable[int], name: str) -> list[int]:
    ordered = sorted(steps)
    if not ordered or any(not isinstance(s, int) or s < 1 for s in ordered) or len(set(ordered)) != len(ordered):
        raise ValueError(f"steps must be distinct positive ints, got {steps!r}")
    if len({name.format(step=s) for s in ordered}) != len(ordered):
        raise ValueError(f"name {name!r} gives the same file name to several steps")
    return ordered


def train_checkpoints(out_dir: str | Path, steps: Iterable[int], *, seed: int = 0, batch: int = 16,
                      name: str = "ckpt-{step}.tar") -> list[Path]:
    """Train the ``dcgan-faces`` DCGAN for ``max(steps)`` steps; save ``out_dir/name.format(step=s)`` after each step s.

    Returns the saved paths in step order. Adam(2e-4, betas (0.5, 0.999)) for both
    nets, BCE with logits, one discriminator then one generator update per step.
    """
    from gan_face_generate.models import Generator as DCGAN

    ordered = _check_steps(steps, name)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(_THREADS)
    try:
        # fork_rng: the seeding below must not move the caller's global RNG.
        with torch.random.fork_rng(devices=[]):
            return _train(out, ordered, seed=seed, batch=batch, name=name, arch=DCGAN)
    finally:
        torch.set_num_threads(threads)


def _train(out: Path, steps: list[int], *, seed: int, batch: int, name: str, arch: type[nn.Module]) -> list[Path]:
    torch.manual_seed(seed)  # the two nets' initial weights
    data_rng = torch.Generator().manual_seed(seed)  # images, batches and codes
    G = arch(ngpu=0, nc=3, nz=_NZ, ngf=_NGF)
    G.apply(_dcgan_init)
    D = _discriminator()
    D.apply(_dcgan_init)
    opt_g = torch.optim.Adam(G.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.999))
    loss = nn.BCEWithLogitsLoss()
    ones, zeros = torch.ones(batch), torch.zeros(batch)
    images = blob_images(_N_IMAGES, data_rng)
    saved: list[Path] = []
    G.train()
    D.train()
    for step in range(1, steps[-1] + 1):
        real = images[torch.randint(_N_IMAGES, (batch,), generator=data_rng)]
        fake = G(torch.randn(batch, _NZ, 1, 1, generator=data_rng))
        # Discriminator: real -> 1, fake -> 0; the fakes are detached so G gets no gradient here.
        opt_d.zero_grad(set_to_none=True)
        loss_d = loss(D(real), ones) + loss(D(fake.detach()), zeros)
        loss_d.backward()
        opt_d.step()
        # Generator: the non-saturating loss, fakes -> 1, through the just-updated D.
        opt_g.zero_grad(set_to_none=True)
        loss_g = loss(D(fake), ones)
        loss_g.backward()
        opt_g.step()
        if not (torch.isfinite(loss_d) and torch.isfinite(loss_g)):
            raise RuntimeError(f"training diverged at step {step}: loss_d={loss_d.item()}, loss_g={loss_g.item()}")
        if step in steps:
            path = out / name.format(step=step)
            # Detached copies of tensors only: what torch.load(weights_only=True) accepts.
            state = {k: v.detach().clone() for k, v in G.state_dict().items()}
            torch.save({"netG_state_dict": state}, path)
            saved.append(path)
    return saved

"""Text2Video-Zero motion dynamics (Khachatryan et al., ICCV 2023, Sec. 3.2).

1. Denoise frame 0 from x_T0 down to T (index `N - t1 - 1` of the N-step schedule), then
   further down to T' (index `N - t0 - 1`);
2. copy its T' latent to every frame and warp frame k by the motion field (one batched
   warp; the field is in pixels of the output image);
3. re-noise the warped frames from T' back to T with the exact DDPM forward jump;
4. denoise all frames from T to 0 (the caller installs cross-frame attention).

Differences from the paper's code and diffusers' deprecated `TextToVideoZeroPipeline`,
both deliberate: motion is in output pixels per frame with +x right and +y down (theirs:
512-px units, positive values move content up-left); the re-noising uses the exact
alphabar ratio (theirs multiplies `alphas[t0:t1]`, one index off). The warp samples at
pixel centres (theirs is offset by half a 512-px pixel); nearest sampling rounds ties
down, so the same integer cells are picked and the warps agree exactly.

From an image (`image_latents`, the Motion-I2V / DragNUWA use case): frame 0 is not denoised
from noise; its latent at T' is the image's clean latent noised to T' (the forward process with
frame 0's initial noise), warped and re-noised to T for the other frames as above, and at every
step of the last pass frame 0 is replaced by the image latent noised to that step's timestep
(the clean image latent after the last step), so frame 0 decodes to the image (up to the VAE)
and cross-frame attention anchors every frame on it.
"""

from __future__ import annotations

import torch

from zeroshot.sampling import EpsFn, NoiseFn, denoise, init_noise_sigma, renoise


def warp_indices(num_steps: int, t0: int, t1: int) -> tuple[int, int]:
    """Schedule indices (i_T, i_T') where frame 0 reaches T and T' (t0, t1 as the paper)."""
    if not 0 <= t0 < t1 <= num_steps - 1:
        raise ValueError(f"t2v-zero needs 0 <= t0 < t1 <= {num_steps - 1}, got t0={t0}, t1={t1}")
    return num_steps - t1 - 1, num_steps - t0 - 1


def motion_latents(
    x_prime: torch.Tensor,
    num_frames: int,
    warp_fn,
) -> torch.Tensor:
    """Copy frame 0's latent `(b, c, 1, h, w)` to `num_frames` frames and warp them."""
    b, c, _, h, w = x_prime.shape
    return warp_fn(x_prime.expand(b, c, num_frames, h, w))


def noised(scheduler, x0: torch.Tensor, eps: torch.Tensor, t) -> torch.Tensor:
    """Clean latents `x0` at timestep `t` with unit noise `eps`: sqrt(abar) x0 + sqrt(1 - abar) eps
    (DDPM's forward process), divided by sqrt(abar) for schedulers whose latents carry
    sigma-scaled noise (Euler: x0 + sigma eps, `init_noise_sigma` > 1)."""
    abar = float(scheduler.alphas_cumprod.to(torch.float64)[int(t)])
    x = (abar**0.5) * x0 + ((1 - abar) ** 0.5) * eps
    return x / abar**0.5 if init_noise_sigma(scheduler) > 1.0 else x


def held_frame(scheduler, x0: torch.Tensor, eps: torch.Tensor):
    """Frame 0 held to clean latents `x0` (b, c, 1, h, w) with unit noise `eps`, as the pair
    `(at, hold)`: `at(i)` is `x0` noised to schedule step `i`'s timestep (`x0` itself after the
    last step); `hold(i, latents)` puts `at(i + 1)` back as frame 0 after step `i` (`denoise`'s
    `after_step`)."""
    timesteps = scheduler.timesteps

    def at(i: int) -> torch.Tensor:
        return x0 if i >= len(timesteps) else noised(scheduler, x0, eps, timesteps[i])

    def hold(i: int, latents: torch.Tensor) -> torch.Tensor:
        return torch.cat([at(i + 1), latents[:, :, 1:]], dim=2)

    return at, hold


def sample(
    eps_fn: EpsFn,
    scheduler,
    noise: torch.Tensor,
    *,
    t0: int,
    t1: int,
    warp_fn,
    renoise_noise: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    eta: float = 0.0,
    noise_fn: NoiseFn | None = None,
    callback=None,
    progress=None,
    before_final=None,
    image_latents: torch.Tensor | None = None,
) -> torch.Tensor:
    """Text2Video-Zero sampling; returns clean latents `(b, c, f, h, w)`.

    noise: initial noise `(b, c, f, h, w)` (already scaled by `init_noise_sigma`); only
    frame 0 is used. warp_fn: warps `(b, c, f, h, w)` by the motion field (identity for
    frame 0). renoise_noise: the noise of the T' -> T jump (drawn if None).
    before_final: optional `fn(x_T) -> x_T` applied before the last denoising pass
    (background smoothing hooks in here). image_latents: clean latents `(b, c, 1, h, w)` of an
    input image that frame 0 is held to (see the module docstring).
    """
    b, c, f, h, w = noise.shape
    timesteps = scheduler.timesteps
    i_T, i_Tp = warp_indices(len(timesteps), t0, t1)
    kw = dict(eta=eta, generator=generator, noise_fn=noise_fn, callback=callback, progress=progress)
    if image_latents is not None:
        return _sample_from_image(
            eps_fn, scheduler, noise, image_latents, i_T, i_Tp, warp_fn, renoise_noise, before_final, kw
        )
    x1_T = denoise(eps_fn, scheduler, noise[:, :, :1], timesteps[:i_T], **kw)
    if f > 1:
        x1_Tp = denoise(eps_fn, scheduler, x1_T, timesteps[i_T:i_Tp], **kw)
        warped = motion_latents(x1_Tp, f, warp_fn)
        x_k_T = renoise(
            warped[:, :, 1:],
            timesteps[i_Tp],
            timesteps[i_T],
            generator,
            alphas_cumprod=scheduler.alphas_cumprod,
            noise=None if renoise_noise is None else renoise_noise[:, :, 1:],
        )
        x_T = torch.cat([x1_T, x_k_T], dim=2)
    else:
        x_T = x1_T
    if before_final is not None:
        x_T = before_final(x_T)
    return denoise(eps_fn, scheduler, x_T, timesteps[i_T:], **kw)


def _sample_from_image(eps_fn, scheduler, noise, image_latents, i_T, i_Tp, warp_fn, renoise_noise, before_final, kw):
    """T2V-Zero with frame 0 held to an input image (see `sample`)."""
    b, c, f, h, w = noise.shape
    timesteps = scheduler.timesteps
    eps0 = noise[:, :, :1] / init_noise_sigma(scheduler)  # frame 0's unit noise  # b c 1 h w
    frame0_at, hold = held_frame(scheduler, image_latents.to(noise.dtype).expand(b, c, 1, h, w), eps0)

    x_T = frame0_at(i_T)
    if f > 1:
        warped = motion_latents(frame0_at(i_Tp), f, warp_fn)
        x_k_T = renoise(
            warped[:, :, 1:],
            timesteps[i_Tp],
            timesteps[i_T],
            kw["generator"],
            alphas_cumprod=scheduler.alphas_cumprod,
            noise=None if renoise_noise is None else renoise_noise[:, :, 1:],
        )
        x_T = torch.cat([x_T, x_k_T], dim=2)
    if before_final is not None:
        x_T = torch.cat([x_T[:, :, :1], before_final(x_T)[:, :, 1:]], dim=2)

    return denoise(eps_fn, scheduler, x_T, timesteps[i_T:], after_step=hold, **kw)

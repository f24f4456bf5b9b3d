"""One training step on the cached tensors, run eagerly or replayed as one CUDA graph.

A step is: pick latents (crop or mirror), noise them at timestep t, UNet forward with the cached caption
embedding, MSE against the noise, backward, optimiser step. At SD1.5 size on a fast GPU the eager step is
bound by Python and kernel launches (about 15,000 small operations a step, measured on an H100), not by the
GPU. On a GPU the whole step, optimiser included, is therefore captured once as a CUDA graph and replayed:
the random choices still come from the trainer's CPU generator and are copied into fixed input tensors, so
the run draws the same numbers in the same order as the eager one, and a resumed run replays the same way.
The warm-up steps that a capture needs are undone (weights and optimiser state put back in place).

On a GPU without bfloat16 the step runs in float16 autocast with a gradient scaler (:func:`make_scaler`): the
loss is scaled up before backward so small gradients do not flush to zero, and a step whose gradients overflow
is skipped while the scale backs off. Such a step runs eagerly (the scaler reads its inf check on the host).
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F


def needs_scaler(amp_dtype, device: torch.device) -> bool:
    """Whether the step runs in float16 autocast (a CUDA device without bfloat16): bfloat16 has float32's range,
    and the CPU trains in float32."""
    return amp_dtype == torch.float16 and torch.device(device).type == "cuda"


def make_scaler(amp_dtype, device: torch.device):
    """A ``torch.amp.GradScaler`` when :func:`needs_scaler`, else None."""
    return torch.amp.GradScaler(torch.device(device).type) if needs_scaler(amp_dtype, device) else None


Condition = Callable[[torch.Tensor], "tuple[torch.Tensor, dict[str, Any]]"]


class TrainStep:
    def __init__(self, unet, latents: torch.Tensor, text: Optional[Callable[[torch.Tensor], torch.Tensor]],
                 caption_index: Optional[torch.Tensor], alphas: torch.Tensor, optimizer, amp_dtype,
                 device: torch.device, scaler=None, condition: Optional[Condition] = None):
        """``latents`` ``(N, 2, C, h, w)`` (each image and its mirror); ``condition``: image indices ``(batch,)`` ->
        ``(encoder_hidden_states, extra UNet keyword arguments)`` (a :mod:`~lib_profile.train.conditioning`
        object; from its cache it must be plain indexing, which a CUDA graph can capture); or, without it,
        ``text(caption_index[idx])`` gives the hidden states alone. ``scaler``: a ``torch.amp.GradScaler`` for
        float16 autocast (:func:`make_scaler`), or None."""
        self.unet, self.latents, self.optimizer = unet, latents, optimizer
        self.scaler = scaler
        self.condition = condition or (lambda idx: (text(caption_index[idx.to(caption_index.device)]), {}))
        self.alphas = alphas
        self.amp_dtype, self.device = amp_dtype, device
        self.graph: Optional[torch.cuda.CUDAGraph] = None

    def _loss(self, idx, flip, t, noise, cond, extra):
        lat = self.latents[idx, flip]
        a = self.alphas[t].view(-1, 1, 1, 1)
        noisy = a.sqrt() * lat + (1 - a).sqrt() * noise
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.device.type == "cuda"):
            pred = self.unet(noisy, t, encoder_hidden_states=cond, **extra).sample
        return F.mse_loss(pred.float(), noise.float())

    def __call__(self, idx: torch.Tensor, flip: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """One step from the CPU draws (indices, mirror flags, timesteps, noise); returns the loss on the device."""
        if self.graph is not None:
            self._idx.copy_(idx)
            self._flip.copy_(flip)
            self._t.copy_(t)
            self._noise.copy_(noise)
            self.graph.replay()
            return self._static_loss
        dev = self.latents.device
        cond, extra = self.condition(idx)
        loss = self._loss(idx.to(dev), flip.to(dev), t.to(self.device), noise.to(self.device, self.latents.dtype), cond,
                          extra)
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)  # skipped when a gradient is inf/nan
            self.scaler.update()
        else:
            loss.backward()
            self.optimizer.step()
        return loss.detach()

    def capture(self, batch: int) -> None:
        """Record the whole step as a CUDA graph (needs cached caption conditioning). Raises if it cannot (and with
        a gradient scaler); the weights and optimiser state are as before either way."""
        if self.scaler is not None:
            raise RuntimeError("a step with a gradient scaler runs eagerly")
        params = [p for group in self.optimizer.param_groups for p in group["params"]]
        weights = [p.detach().clone() for p in params]
        state = {i: {k: v.clone() for k, v in self.optimizer.state[p].items() if torch.is_tensor(v)}
                 for i, p in enumerate(params) if p in self.optimizer.state}
        dev = self.device
        self._idx = torch.zeros(batch, dtype=torch.long, device=dev)
        self._flip = torch.zeros(batch, dtype=torch.long, device=dev)
        self._t = torch.zeros(batch, dtype=torch.long, device=dev)
        self._noise = torch.zeros((batch,) + tuple(self.latents.shape[2:]), dtype=self.latents.dtype, device=dev)

        def fwd_bwd():
            cond, extra = self.condition(self._idx)  # indexing the cache on the device: recorded in the graph
            loss = self._loss(self._idx, self._flip, self._t, self._noise, cond, extra)
            loss.backward()
            self.optimizer.step()
            return loss.detach()

        try:
            side = torch.cuda.Stream(dev)
            side.wait_stream(torch.cuda.current_stream(dev))
            with torch.cuda.stream(side):
                for _ in range(3):
                    self.optimizer.zero_grad(set_to_none=True)
                    fwd_bwd()
            torch.cuda.current_stream(dev).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            self.optimizer.zero_grad(set_to_none=True)
            with torch.cuda.graph(graph):
                self._static_loss = fwd_bwd()
            self.graph = graph
        finally:
            with torch.no_grad():
                for p, w in zip(params, weights):
                    p.copy_(w)
                for i, p in enumerate(params):
                    for k, v in self.optimizer.state.get(p, {}).items():
                        if torch.is_tensor(v):
                            v.copy_(state[i][k]) if k in state.get(i, {}) else v.zero_()
            torch.cuda.synchronize(dev)

import torch


class SignedAdam(torch.optim.Optimizer):
    """Adam's direction, sign-compressed: θ ← θ·(1 − lr·λ) − lr·sign(m / (√v + ε))."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.0):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                st = self.state[p]
                if not st:
                    st["m"] = torch.zeros_like(p)
                    st["v"] = torch.zeros_like(p)
                st["m"].lerp_(p.grad, 1 - b1)
                st["v"].lerp_(p.grad.square(), 1 - b2)
                p.mul_(1 - group["lr"] * group["weight_decay"])
                p.add_((st["m"] / (st["v"].sqrt() + group["eps"])).sign(), alpha=-group["lr"])
        return loss

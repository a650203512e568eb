"""The feed-forward block shared by every transformer layer."""

from torch import Tensor, nn


class MLP(nn.Module):
    def __init__(self, *, dim: int, hidden: int, out: int | None = None) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, out or dim))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

import math

import pytest
import torch
from torch_geometric.data import Batch, Data


def toy_event(seed: int, n_tracks: int = 12, layers=(50.0, 100.0, 150.0, 200.0, 300.0, 400.0, 500.0)):
    """Straight-ish tracks through barrel layers, edges between consecutive hits + random fakes."""
    g = torch.Generator().manual_seed(seed)
    pos, pid, order = [], [], []
    for t in range(n_tracks):
        phi0 = (torch.rand(1, generator=g).item() * 2 - 1) * math.pi
        eta = (torch.rand(1, generator=g).item() * 2 - 1) * 1.5
        for k, r in enumerate(layers):
            phi = phi0 + 0.0005 * r
            pos.append([r * math.cos(phi), r * math.sin(phi), r * math.sinh(eta)])
            pid.append(t + 1)
            order.append(k)
    pos = torch.tensor(pos)
    pid = torch.tensor(pid)
    n = len(pid)
    src, dst = [], []
    for i in range(n - 1):
        if pid[i] == pid[i + 1]:
            src += [i, i + 1]
            dst += [i + 1, i]
    fakes = torch.randint(0, n, (2, n), generator=g)
    ei = torch.cat([torch.tensor([src, dst]), fakes, fakes.flip(0)], 1)
    ei = ei[:, ei[0] != ei[1]]
    r = pos[:, :2].norm(dim=1)
    phi = torch.atan2(pos[:, 1], pos[:, 0])
    eta = torch.asinh(pos[:, 2] / r)
    x = torch.stack([r / 1000, phi / math.pi, pos[:, 2] / 1000, eta / 3], 1)
    d = pos[ei[1]] - pos[ei[0]]
    edge_attr = torch.cat([d / 100, d.norm(dim=1, keepdim=True) / 100, torch.zeros(ei.shape[1], 1)], 1)[:, :5]
    y = (pid[ei[0]] == pid[ei[1]]).float()
    return Data(x=x, pos=pos, edge_index=ei, edge_attr=edge_attr, y=y, particle_id=pid,
                hit_order=torch.tensor(order), pt=torch.full((n,), 2.0),
                particle_eta=torch.zeros(n), weight=torch.full((n,), 1.0 / n),
                hit_id=torch.arange(1, n + 1), event_id=torch.tensor([seed]), num_nodes=n)


@pytest.fixture
def toy_batch():
    return Batch.from_data_list([toy_event(0), toy_event(1)])

"""PyTorch peer of examples/programs/dcgan.hpp: DCGAN generator and discriminator on 32x32
host-drawn images, N(0, 0.02) init, two Adam optimizers, alternating updates, D(x) and D(G(z))
fetched every step."""

import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

import common

CONFIGS = {
    "paper": dict(nz=100, ngf=64, ndf=64, batch=16, lr=2e-4, beta1=0.5, print=True, seed=2),
    "tiny": dict(nz=16, ngf=8, ndf=8, batch=4, lr=2e-4, beta1=0.5, print=False, seed=2),
}


class Generator(nn.Module):
    def __init__(self, c):
        super().__init__()
        g = c["ngf"]
        self.main = nn.Sequential(
            nn.ConvTranspose2d(c["nz"], g * 4, 4, 1, 0, bias=False), nn.BatchNorm2d(g * 4),
            nn.ReLU(True),
            nn.ConvTranspose2d(g * 4, g * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(g * 2),
            nn.ReLU(True),
            nn.ConvTranspose2d(g * 2, g, 4, 2, 1, bias=False), nn.BatchNorm2d(g), nn.ReLU(True),
            nn.ConvTranspose2d(g, 3, 4, 2, 1, bias=False), nn.Tanh())

    def forward(self, z):
        return self.main(z)


class Discriminator(nn.Module):
    def __init__(self, c):
        super().__init__()
        d = c["ndf"]
        self.main = nn.Sequential(
            nn.Conv2d(3, d, 4, 2, 1, bias=False), nn.LeakyReLU(0.2),
            nn.Conv2d(d, d * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(d * 2), nn.LeakyReLU(0.2),
            nn.Conv2d(d * 2, d * 4, 4, 2, 1, bias=False), nn.BatchNorm2d(d * 4),
            nn.LeakyReLU(0.2),
            nn.Conv2d(d * 4, 1, 4, 1, 0, bias=False))

    def forward(self, x):
        return self.main(x).view(-1)


def weights_init(m):
    name = m.__class__.__name__
    if name.find("Conv") != -1:
        nn.init.normal_(m.weight, 0.0, 0.02)
    elif name.find("BatchNorm") != -1:
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


def real_batch(n, rng):
    """A soft-edged coloured disc on a coloured background per image."""
    cy, cx = rng.uniform(8, 24, (2, n, 1, 1))
    r = rng.uniform(4, 10, (n, 1, 1))
    fg, bg = rng.uniform(-1, 1, (2, n, 3, 1, 1))
    y, x = np.meshgrid(np.arange(32), np.arange(32), indexing="ij")
    d = np.sqrt((y - cy) ** 2 + (x - cx) ** 2)
    a = (1 / (1 + np.exp(2 * (d - r))))[:, None]
    return torch.from_numpy((a * fg + (1 - a) * bg).astype(np.float32))


def build(c, mode, notes):
    common.seed_everything(c["seed"])
    rng = np.random.default_rng(c["seed"])
    g_model, d_model = Generator(c), Discriminator(c)
    g_model.apply(weights_init)
    d_model.apply(weights_init)
    opt_g = torch.optim.Adam(g_model.parameters(), lr=c["lr"], betas=(c["beta1"], 0.999))
    opt_d = torch.optim.Adam(d_model.parameters(), lr=c["lr"], betas=(c["beta1"], 0.999))
    b, nz = c["batch"], c["nz"]
    g = common.prepare(g_model, mode, (torch.randn(b, nz, 1, 1),), notes)
    d = common.prepare(d_model, mode, (real_batch(b, rng),), notes)
    real_label, fake_label = torch.ones(b), torch.zeros(b)

    def step(i):
        real = real_batch(b, rng)
        opt_d.zero_grad()
        out_real = d(real)
        err_real = F.binary_cross_entropy_with_logits(out_real, real_label)
        err_real.backward()
        fake = g(torch.randn(b, nz, 1, 1))
        out_fake = d(fake.detach())
        err_fake = F.binary_cross_entropy_with_logits(out_fake, fake_label)
        err_fake.backward()
        opt_d.step()
        opt_g.zero_grad()
        out_gen = d(fake)
        err_g = F.binary_cross_entropy_with_logits(out_gen, real_label)
        err_g.backward()
        opt_g.step()
        d_x = torch.sigmoid(out_real).mean().item()
        d_g_z1 = torch.sigmoid(out_fake).mean().item()
        d_g_z2 = torch.sigmoid(out_gen).mean().item()
        loss_d, loss_g = (err_real + err_fake).item(), err_g.item()
        if c["print"] and i % 10 == 0:
            print(f"dcgan {mode} step {i} Loss_D {loss_d:.4f} Loss_G {loss_g:.4f} D(x) {d_x:.4f}"
                  f" D(G(z)) {d_g_z1:.4f} / {d_g_z2:.4f}", file=sys.stderr)

    return step


if __name__ == "__main__":
    sys.exit(common.main("dcgan", CONFIGS, build))

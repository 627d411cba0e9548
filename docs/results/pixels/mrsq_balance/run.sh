#!/usr/bin/env bash
# MRS.Q from pixels in the pixel learning test's budget (issue 21: does search + ensemble-min learn from image latents at all here?)
cd "$(dirname "$0")/../../../.."
export MUJOCO_GL=osmesa
O="--set encoder.pixels.channels=8 --set encoder.zs_dim=64 --set encoder.za_dim=32 --set encoder.zsa_dim=64 --set encoder.hidden_dim=64 --set critic.hidden_dim=64 --set policy.hidden_dim=64 --set batch_size=32 --set warmup_steps=2000 --set target_update_every=50 --set train.eval_every=500 --set train.eval_episodes=3 --set train.threads=1 --set train.device=cpu"
for s in 1 0; do
  /usr/bin/time -f "%e s" .venv/bin/mrsq train mrsq_pixels_small --env dmcpix:cartpole-balance@32+lite --steps 3000 --seed $s --no-progress --out ${OUT:-runs/pixels/mrsq_balance}/seed$s $O
done

// Which placement mode the two vCPUs were in, from the bare spin ping-pong p50
// measured in the same run. On this kind of 2-vCPU guest the cross-core cache-
// line round trip is bimodal over time (node-latency-floor.md §2): ~0.9 µs
// ("far", 85-90% of samples there) or 0.14-0.23 µs when the host places the two
// vCPUs close ("near", phases of tens of seconds). Every cross-thread figure of
// the bench moves with it, so the bench and the gate name the mode they saw.

export type PlacementMode = 'near' | 'far' | 'between';

/** Spin floors at or below this are the near mode; at or above FAR_MIN_US the far one. */
export const NEAR_MAX_US = 0.35;
export const FAR_MIN_US = 0.6;

export function placementMode(spinFloorUs: number): PlacementMode {
  if (spinFloorUs <= NEAR_MAX_US) return 'near';
  if (spinFloorUs >= FAR_MIN_US) return 'far';
  return 'between';
}

export interface Placement {
  mode: PlacementMode;
  spin_floor_us: number;
}

export function describePlacement(p: Placement): string {
  const known = p.mode === 'near' ? 'vCPUs close, 0.14-0.23 µs' : p.mode === 'far' ? 'vCPUs apart, ~0.9 µs' : 'neither known mode';
  return `placement: ${p.mode} (bare spin ping-pong p50 ${p.spin_floor_us.toFixed(3)} µs; ${known})`;
}

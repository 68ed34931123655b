// A GuestQueue on a bare SAB laid out as host.ts lays it out, with the test
// as its SMMU: sync: false submissions only publish, the test reads the ring
// and frees it by moving CONS to PROD.
import { makeFeatures, type SmmuFeatures } from '../src/features.ts';
import { GuestQueue, type QueueHandle } from '../src/guest.ts';
import { KTHREAD_CTL, MMIO_BYTES, initMmio, queueRegs } from '../src/layout.ts';

export interface BareQueue {
  q: GuestQueue;
  /** The handle, to attach more producers to the same queue. */
  handle: QueueHandle;
  i32: Int32Array;
  ring: Uint32Array;
  regs: number;
}

export function bareQueue(features: SmmuFeatures = makeFeatures({}), log2size = 8): BareQueue {
  const sab = new SharedArrayBuffer(MMIO_BYTES + (16 << log2size));
  initMmio(new Int32Array(sab));
  const regs = queueRegs(0);
  const handle: QueueHandle = {
    path: 'doorbell', sab, ctl: KTHREAD_CTL, qid: 0, regs, log2size, basePa: MMIO_BYTES, baseIpa: 0, vmid: 1, features,
  };
  return { q: GuestQueue.attach(handle), handle, i32: new Int32Array(sab), ring: new Uint32Array(sab, MMIO_BYTES, 4 << log2size), regs };
}

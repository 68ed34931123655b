// Text for a queue's ERR_REASON debug word (layout.ts: (kind << 16) | code),
// for both paths; error path only. A real driver never sees this word: it
// reads CONS.ERR and the command at CONS. The text is for people and tests.

import { illReason } from './codec.ts';
import { cerrorName } from './errors.ts';
import { ERR_KIND } from './layout.ts';
import { TRAP_ERR_KIND } from './trap/cmdq.ts';
import { firstPassIllText } from './trap/firstpass.ts';
import { rejectReason } from './vsmmu.ts';

/** Why the queue stopped on command `u` (its words as they are at CONS now). */
export function errReasonText(reason: number, u: Uint32Array): string {
  const kind = reason >>> 16;
  const code = reason & 0xffff;
  switch (kind) {
    case ERR_KIND.DECODE: return illReason(code, u);
    case ERR_KIND.VSMMU: return rejectReason(code, u);
    case ERR_KIND.MODEL: return `the SMMU refused the command (CERROR_${cerrorName(code)})`;
    case TRAP_ERR_KIND.FIRST_PASS: return firstPassIllText(code, u);
    case TRAP_ERR_KIND.IOCTL: {
      const errno = -((code << 16) >> 16);
      return `the kernel refused the forwarded command: IOMMU_HWPT_INVALIDATE returned -${errnoName(errno)}`
        + (errno === 5 ? ' (arm_vsmmu_convert_user_cmd: a vSID with no vDEVICE, or a command the host SMMU refuses)' : '');
    }
    default: return `unknown error reason 0x${reason.toString(16)}`;
  }
}

function errnoName(errno: number): string {
  switch (errno) {
    case 2: return 'ENOENT';
    case 5: return 'EIO';
    case 14: return 'EFAULT';
    case 22: return 'EINVAL';
    default: return `${errno}`;
  }
}

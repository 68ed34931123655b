// Typed errors. A command the SMMU refuses is a CommandError carrying its
// CERROR code (CONS.ERR value, smmu-facts.md §2.3), never a bare string.

/** CONS.ERR values (spec 6.3.28; Linux CMDQ_ERR_CERROR_*). */
export const CERROR = { NONE: 0, ILL: 1, ABT: 2, ATC_INV_SYNC: 3 } as const;
export type CerrorName = 'ILL' | 'ABT' | 'ATC_INV_SYNC';

export function cerrorName(code: number): CerrorName {
  switch (code) {
    case CERROR.ILL: return 'ILL';
    case CERROR.ABT: return 'ABT';
    case CERROR.ATC_INV_SYNC: return 'ATC_INV_SYNC';
    default: throw new RangeError(`CONS.ERR ${code} is not a CERROR code`);
  }
}

export class CommandError extends Error {
  override readonly name: string = 'CommandError';
  readonly cerror: CerrorName;
  readonly reason: string;
  constructor(cerror: CerrorName, reason: string) {
    super(`CERROR_${cerror}: ${reason}`);
    this.cerror = cerror;
    this.reason = reason;
  }
}

/**
 * A public call refused an argument before doing anything: `argument` names
 * it. A RangeError, so callers catching RangeError keep working.
 */
export class ArgumentError extends RangeError {
  override readonly name = 'ArgumentError';
  constructor(readonly argument: string, detail: string, options?: ErrorOptions) {
    super(`${argument} ${detail}`, options);
  }
}

/** A simulated run went past its event bound (a model that keeps rescheduling): `vcmdq sim` never hangs. */
export class SimLimitError extends Error {
  override readonly name = 'SimLimitError';
}

/**
 * A simulated unmap (or another page-table change: `op`) completed, its
 * CMD_SYNC signalled, while a page it changed still translated as before:
 * an invalidation was lost between the guest and the SMMU model. Every
 * simulated run is a correctness run; this ends it.
 */
export class StaleTranslationError extends Error {
  override readonly name = 'StaleTranslationError';
  constructor(readonly path: string, readonly vcpu: number, readonly iova: number, readonly atNs: number, readonly op = 'unmap') {
    super(`${path}: vCPU ${vcpu}'s ${op} of IOVA 0x${iova.toString(16)} completed at t=${atNs} ns and the page still translates as before it`);
  }
}

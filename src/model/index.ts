// The emulated SMMU and the memory/table helpers the host and guest use with it.
export * from './mem.ts';
export * from './pgtable.ts';
// getField/setField stay module-internal names (the codec exports its own).
export {
  STE_BYTES, CD_BYTES, STE_CFG, S1DSS, STE, CD, getAddr, encodeSte, encodeCd, tg0Of, writeSte, writeGuestCd, writeGuestSte,
  readGuestSte, installNestedSte, buildStage2,
} from './structs.ts';
export type { Stage2Config, SteFields, CdFields, NestedSteReject, Stage2 } from './structs.ts';
export * from './smmu.ts';

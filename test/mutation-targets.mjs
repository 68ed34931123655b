// Mutation testing targets (issue #16): what each Stryker run mutates and the
// in-thread test files meant to guard it. `npm run mutation [-- TARGET ...]`
// (test/mutation.mjs) runs one Stryker process per target, one after the
// other, with MUTATION_TARGET set: stryker.config.mjs then mutates only
// `mutate` and test/vitest.mutation.config.ts includes only `tests`.
//
// Why per target: with per-test coverage Stryker runs, for each mutant, every
// test that executed the mutated line. The codec, the fields table and the
// model are executed by nearly every in-thread test, so one run over the whole
// in-thread suite ran ~100 s of tests per codec mutant (its dry run alone
// exceeded 5 minutes on two shared cores). Restricting each target to the
// files that exist to guard it keeps a run to minutes. The score is
// conservative: a test file left out could only kill more mutants, never
// fewer.
//
// Line ranges drift with edits: check them when the file changes (the
// comment of each says which functions the range must cover).

/** @type {Record<string, { mutate: string[], tests: string[], note: string }>} */
export const targets = {
  queue: {
    mutate: ['src/queue.ts'],
    tests: ['test/queue.test.ts'],
    note: 'queue arithmetic',
  },
  codec: {
    mutate: ['src/codec.ts'],
    tests: ['test/codec.test.ts', 'test/codec-edges.test.ts', 'test/encode-object.test.ts', 'test/fields.test.ts'],
    note: 'command encoder and decoders',
  },
  fields: {
    mutate: ['src/fields.ts'],
    tests: ['test/fields.test.ts', 'test/codec.test.ts', 'test/encode-object.test.ts'],
    note: 'the field table',
  },
  vsmmu: {
    mutate: ['src/vsmmu.ts'],
    tests: ['test/vsmmu.test.ts', 'test/isolation.test.ts', 'test/trap-pure.test.ts'],
    note: 'the vSMMU policy (VMID forcing, what a VM may send)',
  },
  invalidate: {
    mutate: ['src/invalidate.ts'],
    tests: ['test/invalidate.test.ts', 'test/invalidate-range.test.ts', 'test/range-oracle.test.ts'],
    note: 'invalidation builders',
  },
  // The model in three targets (one run of all its ranges was ~1200 mutants: over an hour on two shared cores).
  // model-differential (a minute-long random property) guards all three but is left out for cost: conservative.
  tagstore: {
    mutate: ['src/model/tagstore.ts'],
    tests: ['test/tagstore.test.ts', 'test/model-invalidation.test.ts'],
    note: "the model's cache index (IOTLB, walk cache, CD cache, ATC)",
  },
  'model-inv': {
    // execute .. atcInvalidate: every command, invalidations included.
    mutate: ['src/model/smmu.ts:816-1058'],
    tests: ['test/model-commands.test.ts', 'test/model-invalidation.test.ts', 'test/model.test.ts', 'test/isolation.test.ts', 'test/invalidate-range.test.ts', 'test/range-oracle.test.ts'],
    note: "the model's invalidation path",
  },
  'model-tr': {
    // translate .. walk, loadSte, loadCd, dropConfig; and permits (the last function of the file).
    mutate: ['src/model/smmu.ts:355-812', 'src/model/smmu.ts:1061-1067'],
    tests: ['test/model-translate.test.ts', 'test/model.test.ts', 'test/model-invalidation.test.ts', 'test/model-commands.test.ts', 'test/isolation.test.ts'],
    note: "the model's translation path",
  },
  trap: {
    mutate: ['src/trap/firstpass.ts', 'src/trap/iommufd.ts'],
    tests: ['test/trap-pure.test.ts'],
    note: 'the trap first pass and the iommufd invalidation handler',
  },
  consumer: {
    mutate: ['native-free-fastpath/consumer.ts'],
    tests: [
      'test/consumer-errors.test.ts',
      'test/consumer-order.test.ts',
      'test/consumer-pending.test.ts',
      'test/consumer-poll.test.ts',
      'test/consumer-setup.test.ts',
      'test/consumer-hooks.test.ts',
      'test/hw-vintf.test.ts',
      'test/line-budget.test.ts',
      'test/guest-error-blame.test.ts',
    ],
    note: "the kernel thread's consume loop, driven in-thread through test/consumer-rig.ts",
  },
  guest: {
    // planBatch, batchSlots; submitWords .. invalidateRangeAsync; advance .. publish; consumed, unwrapCons. Not
    // awaitTurn: only another producer thread reaches it (guest-multi-producer covers it on real threads).
    mutate: ['src/guest.ts:45-54', 'src/guest.ts:468-536', 'src/guest.ts:657-762', 'src/guest.ts:784-795'],
    tests: ['test/guest-inthread.test.ts', 'test/line-budget.test.ts', 'test/guest-error-blame.test.ts', 'test/encode-object.test.ts'],
    note: "the guest driver's batching and range code",
  },
};

/** Every test file some target uses (the suite when no target is chosen). */
export const allTests = [...new Set(Object.values(targets).flatMap((t) => t.tests))];

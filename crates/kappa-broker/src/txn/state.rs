//! The transaction state machine of one transactional id, as Kafka's coordinator runs it
//! (KIP-98, KIP-360, KIP-588): which request may move a transaction from which state to
//! which, and the error code every refused transition gets. Pure: the coordinator persists
//! the metadata and writes the markers these transitions call for.

use std::collections::BTreeSet;

use kafka_protocol::error::ResponseError;
use serde::{Deserialize, Serialize};

/// Kafka's transaction states (the names DescribeTransactions and ListTransactions use).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxnState {
    Empty,
    Ongoing,
    PrepareCommit,
    PrepareAbort,
    CompleteCommit,
    CompleteAbort,
    /// The epoch was bumped to fence the producer (a timeout, or a new instance) and the
    /// open transaction is being aborted.
    PrepareEpochFence,
}

impl TxnState {
    pub fn name(&self) -> &'static str {
        match self {
            TxnState::Empty => "Empty",
            TxnState::Ongoing => "Ongoing",
            TxnState::PrepareCommit => "PrepareCommit",
            TxnState::PrepareAbort => "PrepareAbort",
            TxnState::CompleteCommit => "CompleteCommit",
            TxnState::CompleteAbort => "CompleteAbort",
            TxnState::PrepareEpochFence => "PrepareEpochFence",
        }
    }

    pub fn from_name(name: &str) -> Option<TxnState> {
        [
            TxnState::Empty,
            TxnState::Ongoing,
            TxnState::PrepareCommit,
            TxnState::PrepareAbort,
            TxnState::CompleteCommit,
            TxnState::CompleteAbort,
            TxnState::PrepareEpochFence,
        ]
        .into_iter()
        .find(|s| s.name() == name)
    }

    /// Markers are being written: the client must retry (CONCURRENT_TRANSACTIONS).
    pub fn is_preparing(&self) -> bool {
        matches!(
            self,
            TxnState::PrepareCommit | TxnState::PrepareAbort | TxnState::PrepareEpochFence
        )
    }
}

/// A topic partition in a transaction.
pub type TxnPartition = (String, i32);

/// What the coordinator stores for one transactional id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnMetadata {
    pub transactional_id: String,
    pub producer_id: i64,
    /// The producer id before the last change of id (epoch exhaustion), else -1.
    pub last_producer_id: i64,
    pub producer_epoch: i16,
    /// The epoch before the last bump, else -1: a retried InitProducerId is recognised by it.
    pub last_producer_epoch: i16,
    pub timeout_ms: i32,
    pub state: TxnState,
    pub partitions: BTreeSet<TxnPartition>,
    /// When the open transaction began (-1: none).
    pub start_ms: i64,
    pub last_update_ms: i64,
}

/// Kafka's rule: an epoch this high is exhausted and the id is replaced.
const EPOCH_EXHAUSTED: i16 = i16::MAX - 1;

/// A producer id and epoch as a client sends them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerIdAndEpoch {
    pub producer_id: i64,
    pub epoch: i16,
}

/// What an InitProducerId asks of the coordinator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InitOutcome {
    /// Store this metadata, abort the open transaction (markers of the new epoch) when
    /// `abort_first` holds, then answer with its id and epoch.
    Store {
        metadata: TxnMetadata,
        abort_first: Option<BTreeSet<TxnPartition>>,
    },
    /// A retry of an InitProducerId that already bumped: answer with the current id and epoch.
    Unchanged(ProducerIdAndEpoch),
}

/// What an EndTxn asks of the coordinator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndOutcome {
    /// Store the prepared state, write the markers, then store the completed state.
    Prepare { commit: bool },
    /// The transaction already ended this way (a retry): answer success.
    AlreadyDone,
}

impl TxnMetadata {
    pub fn new(id: &str, producer_id: i64, timeout_ms: i32, now_ms: i64) -> TxnMetadata {
        TxnMetadata {
            transactional_id: id.to_string(),
            producer_id,
            last_producer_id: -1,
            producer_epoch: 0,
            last_producer_epoch: -1,
            timeout_ms,
            state: TxnState::Empty,
            partitions: BTreeSet::new(),
            start_ms: -1,
            last_update_ms: now_ms,
        }
    }

    pub fn ids(&self) -> ProducerIdAndEpoch {
        ProducerIdAndEpoch {
            producer_id: self.producer_id,
            epoch: self.producer_epoch,
        }
    }

    /// The next epoch, or a new id (from `new_id`) when the epoch is exhausted. The old epoch
    /// is remembered only when the client named it (KIP-360), so that only its own retry is
    /// recognised, never a zombie's call.
    fn bumped(&self, remember: bool, new_id: &mut dyn FnMut() -> i64) -> TxnMetadata {
        let mut next = self.clone();
        next.last_producer_epoch = if remember { self.producer_epoch } else { -1 };
        if self.producer_epoch >= EPOCH_EXHAUSTED {
            next.last_producer_id = self.producer_id;
            next.producer_id = new_id();
            next.producer_epoch = 0;
        } else {
            next.last_producer_id = -1;
            next.producer_epoch = self.producer_epoch + 1;
        }
        next
    }

    /// InitProducerId for an existing transactional id (a new one is [`TxnMetadata::new`]).
    /// `expected` is the id and epoch the client had (KIP-360), if it sent them.
    pub fn init(
        &self,
        timeout_ms: i32,
        expected: Option<ProducerIdAndEpoch>,
        now_ms: i64,
        new_id: &mut dyn FnMut() -> i64,
    ) -> Result<InitOutcome, ResponseError> {
        if self.state.is_preparing() {
            return Err(ResponseError::ConcurrentTransactions);
        }
        if let Some(e) = expected {
            let valid_id = e.producer_id == self.producer_id
                || (e.producer_id == self.last_producer_id && e.epoch >= EPOCH_EXHAUSTED);
            if !valid_id {
                return Err(ResponseError::ProducerFenced);
            }
            if e.epoch != self.producer_epoch {
                // A retry of a call that bumped (its answer was lost) gets the current id and
                // epoch; any other epoch belongs to a fenced instance.
                if e.epoch == self.last_producer_epoch && self.state != TxnState::Ongoing {
                    if timeout_ms != self.timeout_ms {
                        let mut metadata = self.clone();
                        metadata.timeout_ms = timeout_ms;
                        return Ok(InitOutcome::Store {
                            metadata,
                            abort_first: None,
                        });
                    }
                    return Ok(InitOutcome::Unchanged(self.ids()));
                }
                return Err(ResponseError::ProducerFenced);
            }
        }
        let mut next = self.bumped(expected.is_some(), new_id);
        next.timeout_ms = timeout_ms;
        next.last_update_ms = now_ms;
        // An open transaction of the instance being replaced is aborted with the new epoch,
        // which fences that instance's writes in every partition.
        let abort_first = (self.state == TxnState::Ongoing).then(|| self.partitions.clone());
        next.state = if abort_first.is_some() {
            TxnState::CompleteAbort
        } else {
            TxnState::Empty
        };
        next.partitions.clear();
        next.start_ms = -1;
        Ok(InitOutcome::Store {
            metadata: next,
            abort_first,
        })
    }

    /// The id and epoch of a request must be the transaction's current ones.
    fn check_producer(&self, producer_id: i64, epoch: i16) -> Result<(), ResponseError> {
        if producer_id != self.producer_id {
            return Err(ResponseError::InvalidProducerIdMapping);
        }
        if epoch != self.producer_epoch {
            return Err(ResponseError::ProducerFenced);
        }
        Ok(())
    }

    /// AddPartitionsToTxn / AddOffsetsToTxn: the metadata to store, or `None` when every
    /// partition is already in the open transaction.
    pub fn add_partitions(
        &self,
        producer_id: i64,
        epoch: i16,
        partitions: &[TxnPartition],
        now_ms: i64,
    ) -> Result<Option<TxnMetadata>, ResponseError> {
        self.check_producer(producer_id, epoch)?;
        if self.state.is_preparing() {
            return Err(ResponseError::ConcurrentTransactions);
        }
        if self.state == TxnState::Ongoing && partitions.iter().all(|p| self.partitions.contains(p))
        {
            return Ok(None);
        }
        let mut next = self.clone();
        if self.state != TxnState::Ongoing {
            next.partitions.clear();
            next.start_ms = now_ms;
            next.state = TxnState::Ongoing;
        }
        next.partitions.extend(partitions.iter().cloned());
        next.last_update_ms = now_ms;
        Ok(Some(next))
    }

    /// TxnOffsetCommit: allowed only inside the open transaction of this producer.
    pub fn check_offset_commit(&self, producer_id: i64, epoch: i16) -> Result<(), ResponseError> {
        self.check_producer(producer_id, epoch)?;
        if self.state != TxnState::Ongoing {
            return Err(ResponseError::InvalidTxnState);
        }
        Ok(())
    }

    /// EndTxn.
    pub fn end(
        &self,
        producer_id: i64,
        epoch: i16,
        commit: bool,
    ) -> Result<EndOutcome, ResponseError> {
        self.check_producer(producer_id, epoch)?;
        match (self.state, commit) {
            (TxnState::Ongoing, _) => Ok(EndOutcome::Prepare { commit }),
            (TxnState::CompleteCommit, true) | (TxnState::CompleteAbort, false) => {
                Ok(EndOutcome::AlreadyDone)
            }
            (TxnState::PrepareCommit, true) | (TxnState::PrepareAbort, false) => {
                Err(ResponseError::ConcurrentTransactions)
            }
            _ => Err(ResponseError::InvalidTxnState),
        }
    }

    /// The prepared state EndTxn stores before writing markers.
    pub fn prepared(&self, commit: bool, now_ms: i64) -> TxnMetadata {
        let mut next = self.clone();
        next.state = if commit {
            TxnState::PrepareCommit
        } else {
            TxnState::PrepareAbort
        };
        next.last_update_ms = now_ms;
        next
    }

    /// The completed state stored once every marker is written.
    pub fn completed(&self, now_ms: i64) -> TxnMetadata {
        let mut next = self.clone();
        next.state = match self.state {
            TxnState::PrepareCommit => TxnState::CompleteCommit,
            _ => TxnState::CompleteAbort,
        };
        next.partitions.clear();
        next.start_ms = -1;
        next.last_update_ms = now_ms;
        next
    }

    /// Whether the open transaction has outlived its timeout.
    pub fn timed_out(&self, now_ms: i64) -> bool {
        self.state == TxnState::Ongoing && now_ms - self.start_ms > self.timeout_ms as i64
    }

    /// A timed-out transaction is aborted with a bumped epoch, fencing its producer: the
    /// state to store before its ABORT markers (of the new epoch) are written.
    pub fn fenced(&self, now_ms: i64) -> TxnMetadata {
        let mut next = self.clone();
        // Markers must carry the producer id the partitions know: at an exhausted epoch the
        // epoch stays (Kafka does the same); the next InitProducerId changes the id.
        next.producer_epoch = if self.producer_epoch >= EPOCH_EXHAUSTED {
            self.producer_epoch
        } else {
            self.producer_epoch + 1
        };
        next.last_producer_epoch = -1;
        next.state = TxnState::PrepareEpochFence;
        next.last_update_ms = now_ms;
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids() -> impl FnMut() -> i64 {
        let mut next = 100;
        move || {
            next += 1;
            next
        }
    }

    fn ongoing() -> TxnMetadata {
        let m = TxnMetadata::new("t", 7, 60_000, 0);
        m.add_partitions(7, 0, &[("a".into(), 0)], 10)
            .unwrap()
            .unwrap()
    }

    fn stored(outcome: InitOutcome) -> (TxnMetadata, Option<BTreeSet<TxnPartition>>) {
        match outcome {
            InitOutcome::Store {
                metadata,
                abort_first,
            } => (metadata, abort_first),
            InitOutcome::Unchanged(_) => panic!("expected a store"),
        }
    }

    #[test]
    fn a_transaction_goes_from_empty_through_ongoing_and_prepare_to_complete() {
        let m = TxnMetadata::new("t", 7, 60_000, 0);
        assert_eq!(m.state, TxnState::Empty);
        let m = m
            .add_partitions(7, 0, &[("a".into(), 0), ("a".into(), 1)], 10)
            .unwrap()
            .unwrap();
        assert_eq!(
            (m.state, m.start_ms, m.partitions.len()),
            (TxnState::Ongoing, 10, 2)
        );
        // Adding what is already there stores nothing; a new partition is added.
        assert_eq!(m.add_partitions(7, 0, &[("a".into(), 1)], 11), Ok(None));
        let m = m
            .add_partitions(7, 0, &[("b".into(), 0)], 12)
            .unwrap()
            .unwrap();
        assert_eq!((m.partitions.len(), m.start_ms), (3, 10));
        assert_eq!(m.check_offset_commit(7, 0), Ok(()));
        assert_eq!(m.end(7, 0, true), Ok(EndOutcome::Prepare { commit: true }));
        let p = m.prepared(true, 20);
        assert_eq!(p.state, TxnState::PrepareCommit);
        // While markers are written: retry later.
        assert_eq!(
            p.end(7, 0, true),
            Err(ResponseError::ConcurrentTransactions)
        );
        assert_eq!(
            p.add_partitions(7, 0, &[("a".into(), 0)], 21),
            Err(ResponseError::ConcurrentTransactions)
        );
        assert!(matches!(
            p.init(60_000, None, 21, &mut ids()),
            Err(ResponseError::ConcurrentTransactions)
        ));
        let c = p.completed(30);
        assert_eq!(
            (c.state, c.partitions.len(), c.start_ms),
            (TxnState::CompleteCommit, 0, -1)
        );
        // A retried commit succeeds; an abort of a committed transaction does not.
        assert_eq!(c.end(7, 0, true), Ok(EndOutcome::AlreadyDone));
        assert_eq!(c.end(7, 0, false), Err(ResponseError::InvalidTxnState));
        // The next transaction starts afresh.
        let n = c
            .add_partitions(7, 0, &[("z".into(), 3)], 40)
            .unwrap()
            .unwrap();
        assert_eq!(
            (n.state, n.start_ms, n.partitions.len()),
            (TxnState::Ongoing, 40, 1)
        );
        assert_eq!(
            n.end(7, 0, false),
            Ok(EndOutcome::Prepare { commit: false })
        );
        assert_eq!(
            n.prepared(false, 41).completed(42).state,
            TxnState::CompleteAbort
        );
    }

    #[test]
    fn invalid_transitions_get_kafkas_error_codes() {
        let empty = TxnMetadata::new("t", 7, 60_000, 0);
        assert_eq!(empty.end(7, 0, true), Err(ResponseError::InvalidTxnState));
        assert_eq!(empty.end(7, 0, false), Err(ResponseError::InvalidTxnState));
        assert_eq!(
            empty.check_offset_commit(7, 0),
            Err(ResponseError::InvalidTxnState)
        );
        let m = ongoing();
        assert_eq!(
            m.end(8, 0, true),
            Err(ResponseError::InvalidProducerIdMapping)
        );
        assert_eq!(m.end(7, 1, true), Err(ResponseError::ProducerFenced));
        assert_eq!(
            m.add_partitions(8, 0, &[("a".into(), 0)], 1),
            Err(ResponseError::InvalidProducerIdMapping)
        );
        assert_eq!(
            m.add_partitions(7, 3, &[("a".into(), 0)], 1),
            Err(ResponseError::ProducerFenced)
        );
        assert_eq!(
            m.check_offset_commit(7, 5),
            Err(ResponseError::ProducerFenced)
        );
        let aborting = m.prepared(false, 1);
        assert_eq!(
            aborting.end(7, 0, false),
            Err(ResponseError::ConcurrentTransactions)
        );
        assert_eq!(
            aborting.end(7, 0, true),
            Err(ResponseError::InvalidTxnState)
        );
    }

    #[test]
    fn init_bumps_the_epoch_and_aborts_an_open_transaction() {
        let m = ongoing();
        let (next, abort) = stored(m.init(30_000, None, 50, &mut ids()).unwrap());
        assert_eq!((next.producer_id, next.producer_epoch), (7, 1));
        assert_eq!(
            next.last_producer_epoch, -1,
            "no zombie may pass for a retry"
        );
        assert_eq!(next.timeout_ms, 30_000);
        assert_eq!(
            next.init(
                30_000,
                Some(ProducerIdAndEpoch {
                    producer_id: 7,
                    epoch: 0
                }),
                51,
                &mut ids()
            ),
            Err(ResponseError::ProducerFenced)
        );
        assert_eq!(
            abort,
            Some(m.partitions.clone()),
            "the fenced instance's transaction is aborted"
        );
        assert_eq!(
            (next.state, next.partitions.len()),
            (TxnState::CompleteAbort, 0)
        );
        // The old instance is fenced everywhere.
        assert_eq!(next.end(7, 0, true), Err(ResponseError::ProducerFenced));
        assert_eq!(
            next.add_partitions(7, 0, &[("a".into(), 0)], 51),
            Err(ResponseError::ProducerFenced)
        );
        // A new instance's init without an id just bumps again, and aborts nothing.
        let (again, abort) = stored(next.init(30_000, None, 60, &mut ids()).unwrap());
        assert_eq!((again.producer_epoch, abort), (2, None));
        assert_eq!(again.state, TxnState::Empty);
    }

    #[test]
    fn kip_360_retries_and_fencing_by_expected_epoch() {
        let m = TxnMetadata::new("t", 7, 60_000, 0);
        let (bumped, _) = stored(
            m.init(
                60_000,
                Some(ProducerIdAndEpoch {
                    producer_id: 7,
                    epoch: 0,
                }),
                1,
                &mut ids(),
            )
            .unwrap(),
        );
        assert_eq!(bumped.producer_epoch, 1);
        // The answer was lost and the client retries with what it had: same result, no bump.
        assert_eq!(
            bumped.init(
                60_000,
                Some(ProducerIdAndEpoch {
                    producer_id: 7,
                    epoch: 0
                }),
                2,
                &mut ids()
            ),
            Ok(InitOutcome::Unchanged(ProducerIdAndEpoch {
                producer_id: 7,
                epoch: 1
            }))
        );
        // An epoch that is neither current nor the previous one belongs to a fenced zombie.
        assert_eq!(
            bumped.init(
                60_000,
                Some(ProducerIdAndEpoch {
                    producer_id: 7,
                    epoch: 5
                }),
                2,
                &mut ids()
            ),
            Err(ResponseError::ProducerFenced)
        );
        assert_eq!(
            bumped.init(
                60_000,
                Some(ProducerIdAndEpoch {
                    producer_id: 99,
                    epoch: 1
                }),
                2,
                &mut ids()
            ),
            Err(ResponseError::ProducerFenced)
        );
    }

    #[test]
    fn an_exhausted_epoch_gets_a_new_producer_id() {
        let mut m = TxnMetadata::new("t", 7, 60_000, 0);
        m.producer_epoch = EPOCH_EXHAUSTED;
        let expected = ProducerIdAndEpoch {
            producer_id: 7,
            epoch: EPOCH_EXHAUSTED,
        };
        let (next, _) = stored(m.init(60_000, Some(expected), 1, &mut ids()).unwrap());
        assert_eq!((next.producer_id, next.producer_epoch), (101, 0));
        assert_eq!(
            (next.last_producer_id, next.last_producer_epoch),
            (7, EPOCH_EXHAUSTED)
        );
        // The client that asked with the old id and epoch gets the new ones on a retry.
        assert_eq!(
            next.init(
                60_000,
                Some(ProducerIdAndEpoch {
                    producer_id: 7,
                    epoch: EPOCH_EXHAUSTED
                }),
                2,
                &mut ids()
            ),
            Ok(InitOutcome::Unchanged(ProducerIdAndEpoch {
                producer_id: 101,
                epoch: 0
            }))
        );
    }

    #[test]
    fn a_timed_out_transaction_is_fenced_with_the_next_epoch() {
        let m = ongoing();
        assert!(!m.timed_out(10 + 60_000));
        assert!(m.timed_out(10 + 60_001));
        let fenced = m.fenced(70_000);
        assert_eq!(fenced.state, TxnState::PrepareEpochFence);
        assert_eq!((fenced.producer_id, fenced.producer_epoch), (7, 1));
        assert_eq!(
            fenced.partitions, m.partitions,
            "markers go where the transaction wrote"
        );
        let done = fenced.completed(70_001);
        assert_eq!(done.state, TxnState::CompleteAbort);
        // The timed-out producer is fenced...
        assert_eq!(done.end(7, 0, true), Err(ResponseError::ProducerFenced));
        // ...also when it asks for a new epoch with the one it had (as Kafka does)...
        assert_eq!(
            done.init(
                60_000,
                Some(ProducerIdAndEpoch {
                    producer_id: 7,
                    epoch: 0,
                }),
                70_002,
                &mut ids(),
            ),
            Err(ResponseError::ProducerFenced)
        );
        // ...while a new instance starts over with the next epoch.
        let (again, abort) = stored(done.init(60_000, None, 70_003, &mut ids()).unwrap());
        assert_eq!((again.producer_epoch, abort), (2, None));
        assert_eq!(
            TxnState::from_name("PrepareEpochFence"),
            Some(TxnState::PrepareEpochFence)
        );
    }
}

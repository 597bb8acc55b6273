-- Nexmark q7-like, tumbling windows: the highest bid price of each 10-second window.
-- (Nexmark's q7 goes on to join back to the bids carrying that price.)

CREATE TABLE nexmark_q7 (
  window_start TIMESTAMP(3),
  window_end TIMESTAMP(3),
  maxprice BIGINT
) WITH (
  'connector' = 'kafka',
  'topic' = 'nexmark-q7',
  'format' = 'json'
);

INSERT INTO nexmark_q7
SELECT window_start, window_end, MAX(price) AS maxprice
FROM TABLE(TUMBLE(TABLE bid, DESCRIPTOR(date_time), INTERVAL '10' SECOND))
GROUP BY window_start, window_end;

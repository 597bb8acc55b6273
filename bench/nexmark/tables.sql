-- Nexmark sources over the topics written by `kappa bench nexmark` (run this file first).
-- Mixed-case columns are quoted: Flink SQL identifiers are case-sensitive and the JSON fields
-- are emailAddress, creditCard, itemName, initialBid.

CREATE TABLE person (
  id BIGINT,
  name VARCHAR,
  `emailAddress` VARCHAR,
  `creditCard` VARCHAR,
  city VARCHAR,
  state VARCHAR,
  date_time TIMESTAMP(3),
  extra VARCHAR,
  WATERMARK FOR date_time AS date_time - INTERVAL '4' SECOND
) WITH (
  'connector' = 'kafka',
  'topic' = 'nexmark-person',
  'format' = 'json',
  'scan.startup.mode' = 'earliest-offset'
);

CREATE TABLE auction (
  id BIGINT,
  `itemName` VARCHAR,
  description VARCHAR,
  `initialBid` BIGINT,
  reserve BIGINT,
  date_time TIMESTAMP(3),
  expires TIMESTAMP(3),
  seller BIGINT,
  category BIGINT,
  extra VARCHAR,
  WATERMARK FOR date_time AS date_time - INTERVAL '4' SECOND
) WITH (
  'connector' = 'kafka',
  'topic' = 'nexmark-auction',
  'format' = 'json',
  'scan.startup.mode' = 'earliest-offset'
);

CREATE TABLE bid (
  auction BIGINT,
  bidder BIGINT,
  price BIGINT,
  channel VARCHAR,
  url VARCHAR,
  date_time TIMESTAMP(3),
  extra VARCHAR,
  WATERMARK FOR date_time AS date_time - INTERVAL '4' SECOND
) WITH (
  'connector' = 'kafka',
  'topic' = 'nexmark-bid',
  'format' = 'json',
  'scan.startup.mode' = 'earliest-offset'
);

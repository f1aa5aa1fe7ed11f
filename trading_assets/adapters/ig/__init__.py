"""IG (spread bets / CFDs): the broker and price history over trading-ig, and the Lightstreamer price stream."""

// SPDX-License-Identifier: MIT OR Apache-2.0
pragma solidity 0.8.28;

/// @notice Chainlink's interface, declared here on purpose: this consumer knows nothing
/// of `ReserveFeed` beyond what any proof-of-reserve consumer knows.
interface AggregatorV3Interface {
    function decimals() external view returns (uint8);
    function description() external view returns (string memory);
    function version() external view returns (uint256);
    function latestRoundData()
        external
        view
        returns (uint80 roundId, int256 answer, uint256 startedAt, uint256 updatedAt, uint80 answeredInRound);
}

/// @notice Test helper only: reads a reserve as a lending protocol would.
contract ReserveConsumer {
    AggregatorV3Interface public immutable feed;

    constructor(AggregatorV3Interface feed_) {
        feed = feed_;
    }

    /// @notice The reserve in sats, scaled from the feed's decimals to 8.
    function reserveSats() external view returns (uint256 sats, uint256 updatedAt) {
        (, int256 answer,, uint256 updated,) = feed.latestRoundData();
        require(answer >= 0, "negative answer");
        uint8 d = feed.decimals();
        sats = d >= 8 ? uint256(answer) / 10 ** (d - 8) : uint256(answer) * 10 ** (8 - d);
        updatedAt = updated;
    }
}
